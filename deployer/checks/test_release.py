"""What a healthy deployed host looks like, checked over plain OpenSSH with testinfra.

Run by `inv verify` (and after each drill phase with `--verify`), which passes the hosts and:
DEPLOYER_VERIFY_DEPLOY_TO, DEPLOYER_VERIFY_RELEASE (expected release id), DEPLOYER_VERIFY_SHARED
(shared paths, one per line) and DEPLOYER_VERIFY_HEALTH (the health check command, may be empty).
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex

import pytest

DEPLOY_TO = os.environ.get("DEPLOYER_VERIFY_DEPLOY_TO", "")
RELEASE = os.environ.get("DEPLOYER_VERIFY_RELEASE", "")
SHARED = [line for line in os.environ.get("DEPLOYER_VERIFY_SHARED", "").splitlines() if line.strip()]
HEALTH = os.environ.get("DEPLOYER_VERIFY_HEALTH", "")
LOCK_FREE = os.environ.get("DEPLOYER_VERIFY_LOCK_FREE", "1") == "1"  # the drill holds the lock while it checks
RELEASE_LINK = re.compile(r"^releases/([A-Za-z0-9][A-Za-z0-9._-]*)$")


def q(path: str) -> str:
    return shlex.quote(path)


def current_link(host) -> str:  # type: ignore[no-untyped-def]
    result = host.run(f"readlink {q(DEPLOY_TO + '/current')}")
    assert result.rc == 0, f"{DEPLOY_TO}/current is missing or not a symlink"
    return str(result.stdout.strip())


def test_current_is_a_link_into_releases(host):  # type: ignore[no-untyped-def]
    link = current_link(host)
    match = RELEASE_LINK.match(link)
    assert match, f"current points to {link!r}, not to a folder directly inside releases/"
    assert host.file(f"{DEPLOY_TO}/releases/{match.group(1)}").is_directory


def test_current_is_the_expected_release(host):  # type: ignore[no-untyped-def]
    if not RELEASE:
        pytest.skip("no expected release given")  # verify always passes one; this is for ad-hoc runs
    assert current_link(host) == f"releases/{RELEASE}"
    resolved = host.run(f"cd {q(DEPLOY_TO + '/current/')} && pwd -P").stdout.strip()
    assert posixpath.basename(resolved) == RELEASE


def test_previous_version_names_a_release_that_is_there(host):  # type: ignore[no-untyped-def]
    marker = host.file(f"{DEPLOY_TO}/current/previousVersion")
    if not marker.exists:
        return  # the first release has no previous one
    text = marker.content_string.strip()
    if not text:
        return
    parent, name = posixpath.split(text)
    assert parent == f"{DEPLOY_TO}/releases", f"previousVersion points outside {DEPLOY_TO}/releases: {text!r}"
    assert host.file(text).is_directory, f"previousVersion names {name}, which is not on this host"


def test_the_lock_is_free(host):  # type: ignore[no-untyped-def]
    if not LOCK_FREE:
        return
    assert not host.file(f"{DEPLOY_TO}/.deployer/lock").exists, "the fleet lock is held (see `inv lock-status`)"


@pytest.mark.parametrize("path", SHARED or ["(none)"])
def test_shared_paths_are_linked(host, path):  # type: ignore[no-untyped-def]
    if not SHARED:
        return
    name = path.rstrip("/")
    linked = host.file(f"{DEPLOY_TO}/current/{name}")
    assert linked.is_symlink, f"current/{name} is not a link to shared/"
    assert linked.linked_to == f"{DEPLOY_TO}/shared/{name}" or linked.linked_to.endswith(f"/shared/{name}")


def test_the_app_is_healthy(host):  # type: ignore[no-untyped-def]
    if not HEALTH:
        return
    result = host.run(f"cd {q(DEPLOY_TO + '/current/')} && {HEALTH}")
    assert result.rc == 0, f"health check `{HEALTH}` exited {result.rc}: {result.stderr.strip()[-200:]}"
