"""The mixed local fleet is what it claims (web1 GNU, web2 BusyBox, web3 posix-strict, web4 tcsh),
and a host that lacks a required tool is named and left alone before anything changes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer.playground.localfleet import LocalFleet
from deployer.playground.userlands import ROOT
from tests.conftest import in_host_namespace, run_inv


def raw(fleet: LocalFleet, name: str, command: str) -> subprocess.CompletedProcess[str]:
    """COMMAND as the deploy user's login shell gets it (no sh -c around it)."""
    return subprocess.run(fleet.ssh_command(name, command), capture_output=True, text=True, timeout=60)


def test_each_host_has_the_userland_it_claims(local_fleet):
    kinds = {host.name: host.userland for host in local_fleet.hosts()}
    assert kinds == {"web1": "gnu", "web2": "busybox", "web3": "posix-strict", "web4": "tcsh"}
    assert "GNU coreutils" in raw(local_fleet, "web1", "mv --version").stdout
    assert (
        "BusyBox"
        in raw(local_fleet, "web2", "sh -c 'mv --help' 2>&1").stdout
        + raw(local_fleet, "web2", "sh -c 'mv --help'").stderr
    )
    strict = raw(local_fleet, "web3", "mv -T a b")
    assert strict.returncode == 2 and "option -T is not POSIX" in strict.stderr
    for absent in ("timeout", "base64", "sha256sum", "stat", "flock"):
        assert raw(local_fleet, "web3", f"command -v {absent}").stdout == "", absent
    assert raw(local_fleet, "web4", "echo $shell").stdout.strip() == "/usr/bin/tcsh"  # csh's own variable


@pytest.fixture
def gzip_gone_from_web3(local_fleet: LocalFleet, tmp_path: Path) -> Iterator[None]:
    """web3 (posix-strict) loses gzip for one test: in its own mount namespace its /usr/bin is
    covered by a copy of the userland without gzip. The shared userland folder stays as it is (the
    other test process's fleet has a posix-strict web3 of its own, deploying meanwhile). Not web2:
    BusyBox ash runs its own applets even when their links are gone."""
    copy = tmp_path / "usr-bin"
    shutil.copytree(os.path.join(ROOT, "posix-strict"), copy, symlinks=True)
    (copy / "gzip").unlink()
    in_host_namespace(local_fleet, "web3", f"mount --bind '{copy}' /usr/bin")
    try:
        yield
    finally:
        in_host_namespace(local_fleet, "web3", "umount /usr/bin")


def test_a_host_without_a_required_tool_is_named_and_nothing_changes(
    make_inventory, views, artifacts, deploy_to, gzip_gone_from_web3
):
    inventory = make_inventory()
    done = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v1"])
    assert done.returncode == 3  # refused as a whole: nothing changed anywhere
    assert "host web3 has no gzip" in done.stdout + done.stderr, done.stdout + done.stderr
    for name, view in views.items():
        assert view.current_link(deploy_to) is None, name
        assert view.releases(deploy_to) == [], name
        assert view.host.run("test -e %s/.deployer/lock", deploy_to).rc != 0, f"{name}: lock left behind"


@pytest.fixture
def cdpath_in_every_session(local_fleet: LocalFleet) -> Iterator[None]:
    """Every host's sessions get CDPATH and TAR_OPTIONS in their environment, as a deploy user's
    shell start-up file or sshd's SetEnv can give them (bash reads ~/.bashrc even for `ssh host
    command`). With CDPATH set, POSIX `cd` prints the folder it entered: a script's
    `$(cd releases && pwd -P)` then held that path twice (every switch failed its verification);
    GNU tar's TAR_OPTIONS=--to-stdout unpacked each release as an empty folder, and the deploy
    said it succeeded."""
    originals = {host.name: Path(host.config).read_text() for host in local_fleet.hosts()}
    try:
        for host in local_fleet.hosts():
            local_fleet.stop_host(host.name)
            Path(host.config).write_text(originals[host.name] + "SetEnv CDPATH=.:/tmp TAR_OPTIONS=--to-stdout\n")
            local_fleet.start_host(host.name)
            local_fleet.wait_ready(host)
        yield
    finally:
        for host in local_fleet.hosts():
            local_fleet.stop_host(host.name)
            Path(host.config).write_text(originals[host.name])
            local_fleet.start_host(host.name)
            local_fleet.wait_ready(host)


def test_a_deploy_users_cdpath_and_tar_options_change_nothing(
    local_fleet, make_inventory, views, artifacts, deploy_to, cdpath_in_every_session
):
    for host in local_fleet.hosts():  # the variable reaches every userland's sessions, tcsh's too
        said = raw(local_fleet, host.name, "echo $CDPATH $TAR_OPTIONS").stdout.strip()
        assert said == ".:/tmp --to-stdout", host.name
    inventory = make_inventory()
    for version in ("v1", "v2"):
        done = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts[version])
        assert done.returncode == 0, done.stdout + done.stderr
        assert {name: view.version(deploy_to) for name, view in views.items()} == dict.fromkeys(views, version)
    status = json.loads(run_inv("status", "--inventory", inventory, "--json").stdout)
    live = {name: view.current_release(deploy_to) for name, view in views.items()}
    assert {host["host"]: (host["current"], host["problems"]) for host in status["hosts"]} == {
        name: (release, []) for name, release in live.items()
    }
    back = run_inv("rollback", "--inventory", inventory)
    assert back.returncode == 0, back.stdout + back.stderr
    assert {name: view.version(deploy_to) for name, view in views.items()} == dict.fromkeys(views, "v1")
