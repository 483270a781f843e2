"""The mixed local fleet is what it claims (web1 GNU, web2 BusyBox, web3 posix-strict, web4 tcsh),
and a host that lacks a required tool is named and left alone before anything changes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from deployer.playground.localfleet import LocalFleet
from deployer.playground.userlands import ROOT
from tests.conftest import run_inv


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
def gzip_gone_from_web3() -> Iterator[None]:
    """web3 (posix-strict) loses gzip for one test (the folder is mounted as its /usr/bin). Not web2:
    BusyBox ash runs its own applets even when their links are gone."""
    applet = os.path.join(ROOT, "posix-strict", "gzip")
    os.rename(applet, applet + ".away")
    try:
        yield
    finally:
        os.rename(applet + ".away", applet)


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
