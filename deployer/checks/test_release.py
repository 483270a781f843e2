"""What a healthy deployed host looks like, checked over plain OpenSSH with testinfra.

Run by `inv verify` (and after each drill phase with `--verify`), which passes the hosts and:
DEPLOYER_VERIFY_DEPLOY_TO (and DEPLOYER_VERIFY_DEPLOY_TO_OF, JSON: host -> its own deploy_to),
DEPLOYER_VERIFY_RELEASE (expected release id), DEPLOYER_VERIFY_SHARED
(shared paths, one per line) and DEPLOYER_VERIFY_HEALTH (the health check command, may be empty).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex

import pytest

from deployer.invocation import command

DEPLOY_TO = os.environ.get("DEPLOYER_VERIFY_DEPLOY_TO", "")
# per host (by its testinfra host name) where its deploy_to differs from the inventory's
DEPLOY_TO_OF = json.loads(os.environ.get("DEPLOYER_VERIFY_DEPLOY_TO_OF", "{}") or "{}")
RELEASE = os.environ.get("DEPLOYER_VERIFY_RELEASE", "")
SHARED = [line for line in os.environ.get("DEPLOYER_VERIFY_SHARED", "").splitlines() if line.strip()]
HEALTH = os.environ.get("DEPLOYER_VERIFY_HEALTH", "")
LOCK_FREE = os.environ.get("DEPLOYER_VERIFY_LOCK_FREE", "1") == "1"  # the drill holds the lock while it checks
RELEASE_LINK = re.compile(r"^releases/([A-Za-z0-9][A-Za-z0-9._-]*)$")


def q(path: str) -> str:
    return shlex.quote(path)


def sh(host, command: str):  # type: ignore[no-untyped-def]
    """Run COMMAND with POSIX sh, whatever the login shell is (tcsh and fish parse `&&`, `2>`,
    `$(...)` their own way): the one thing quoted for the login shell is a single-quoted word."""
    return host.run("sh -c " + shlex.quote(command))


@pytest.fixture
def deploy_to(host) -> str:  # type: ignore[no-untyped-def]
    return str(DEPLOY_TO_OF.get(host.backend.hostname, DEPLOY_TO))


def current_link(host, deploy_to: str) -> str:  # type: ignore[no-untyped-def]
    result = sh(host, f"readlink {q(deploy_to + '/current')}")
    assert result.rc == 0, f"{deploy_to}/current is missing or not a symlink"
    return str(result.stdout.strip())


def test_current_is_a_link_into_releases(host, deploy_to):  # type: ignore[no-untyped-def]
    link = current_link(host, deploy_to)
    match = RELEASE_LINK.match(link)
    assert match, f"current points to {link!r}, not to a folder directly inside releases/"
    assert host.file(f"{deploy_to}/releases/{match.group(1)}").is_directory


def test_current_is_the_expected_release(host, deploy_to):  # type: ignore[no-untyped-def]
    if not RELEASE:
        pytest.skip("no expected release given")  # verify always passes one; this is for ad-hoc runs
    assert current_link(host, deploy_to) == f"releases/{RELEASE}"
    resolved = sh(host, f"cd {q(deploy_to + '/current/')} && pwd -P").stdout.strip()
    assert posixpath.basename(resolved) == RELEASE


def test_previous_version_names_a_release_that_is_there(host, deploy_to):  # type: ignore[no-untyped-def]
    marker = host.file(f"{deploy_to}/current/previousVersion")
    if not marker.exists:
        return  # the first release has no previous one
    text = marker.content_string.strip()
    if not text:
        return
    parent, name = posixpath.split(text)
    assert parent == f"{deploy_to}/releases", f"previousVersion points outside {deploy_to}/releases: {text!r}"
    assert host.file(text).is_directory, f"previousVersion names {name}, which is not on this host"


def test_the_lock_is_free(host, deploy_to):  # type: ignore[no-untyped-def]
    if not LOCK_FREE:
        return
    held = f"the fleet lock is held (see `{command('lock-status')}`)"
    assert not host.file(f"{deploy_to}/.deployer/lock").exists, held


@pytest.mark.parametrize("path", SHARED or ["(none)"])
def test_shared_paths_are_linked(host, path, deploy_to):  # type: ignore[no-untyped-def]
    if not SHARED:
        return
    name = path.rstrip("/")
    linked = host.file(f"{deploy_to}/current/{name}")
    assert linked.is_symlink, f"current/{name} is not a link to shared/"
    # The link's own text (POSIX readlink; testinfra's linked_to needs GNU readlink -f).
    target = sh(host, f"readlink {q(f'{deploy_to}/current/{name}')}").stdout.strip()
    assert target == f"{deploy_to}/shared/{name}" or target.endswith(f"/shared/{name}"), target


def test_the_app_is_healthy(host, deploy_to):  # type: ignore[no-untyped-def]
    if not HEALTH:
        return
    result = sh(host, f"cd {q(deploy_to + '/current/')} && {HEALTH}")
    assert result.rc == 0, f"health check `{HEALTH}` exited {result.rc}: {result.stderr.strip()[-200:]}"
