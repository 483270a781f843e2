"""Each host keeps a copy of the deployer's scripts, so a session sends a few hundred bytes instead
of the script (real sshd hosts of every userland: GNU, BusyBox, posix-strict, a tcsh login).

What the controller sent is counted by the kernel (iptables), the copies read over the host's own
OpenSSH connection."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator

import pytest

from deployer import operations
from deployer.connection import HostConnection
from deployer.fleet import Fleet
from deployer.inventory import load_inventory
from deployer.protocol import ProtocolError
from deployer.report import Progress
from deployer.scripts import kept_name, kept_text
from tests.conftest import run_inv

pytestmark = pytest.mark.fleet
QUIET = Progress(quiet=True)


@contextlib.contextmanager
def bytes_sent_to_hosts(local_fleet) -> Iterator[Callable[[], dict[str, int]]]:
    """What this machine sends each host's sshd, counted by the kernel (an iptables rule per host
    that only counts: IP and TCP headers included), read by the function yielded."""
    chain = f"deployer-count-{os.getpid()}"
    rules = {
        host.name: ["-d", host.address, "-p", "tcp", "--dport", str(host.port), "-j", chain]
        for host in local_fleet.hosts()
    }
    subprocess.run(["iptables", "-N", chain], check=True)
    try:
        for rule in rules.values():
            subprocess.run(["iptables", "-I", "OUTPUT", *rule], check=True)

        def read() -> dict[str, int]:
            listed = subprocess.run(
                ["iptables", "-L", "OUTPUT", "-v", "-x", "-n"], capture_output=True, text=True, check=True
            )
            counted = {}
            for host in local_fleet.hosts():
                for line in listed.stdout.splitlines():
                    fields = line.split()
                    if chain in fields and host.address in fields and f"dpt:{host.port}" in fields:
                        counted[host.name] = int(fields[1])
            return counted

        yield read
    finally:
        for rule in rules.values():
            subprocess.run(["iptables", "-D", "OUTPUT", *rule], check=False)
        subprocess.run(["iptables", "-X", chain], check=False)


def copies_on(views, deploy_to) -> dict[str, dict[str, str]]:
    copies = {}
    for name, view in views.items():
        folder = f"{deploy_to}/.deployer/scripts"
        listed = view.host.run("ls %s", folder).stdout.split()
        copies[name] = {file: view.host.run("cat %s", f"{folder}/{file}").stdout for file in listed}
    return copies


def test_hosts_keep_the_scripts_and_a_rollback_then_sends_a_fraction(
    local_fleet, make_inventory, views, artifacts, deploy_to
):
    inventory = load_inventory(make_inventory())
    for version in ("v1", "v2", "v3"):
        assert operations.deploy(inventory, artifacts[version], progress=QUIET).ok
    wanted = {kept_name(name): kept_text(name) for name in ("gather", "stage", "switch")}
    for name, copies in copies_on(views, deploy_to).items():
        assert {file: copies[file] for file in wanted if file in copies} == wanted, name

    for view in views.values():  # without the copies a rollback sends the scripts whole...
        view.host.run("rm -rf %s", f"{deploy_to}/.deployer/scripts")
    with bytes_sent_to_hosts(local_fleet) as sent:
        assert operations.rollback(inventory, progress=QUIET).ok
        whole = sent()
    assert {view.version(deploy_to) for view in views.values()} == {"v2"}
    with bytes_sent_to_hosts(local_fleet) as sent:  # ...and keeps them, so the next one sends a fraction
        assert operations.rollback(inventory, progress=QUIET).ok
        by_copy = sent()
    assert {view.version(deploy_to) for view in views.values()} == {"v1"}

    for name in views:
        # whole: gather (8.7 KB, asked for) and switch (24 KB as sent); by copy: 1.6 and 0.4 KB
        assert whole[name] - by_copy[name] > 20_000, (name, whole[name], by_copy[name])
        assert by_copy[name] < 10_000, (name, by_copy[name])  # the SSH handshake is most of it


def test_an_edited_copy_never_runs_and_is_sent_again(make_inventory, views, artifacts, deploy_to, tmp_path):
    inventory = load_inventory(make_inventory())
    assert operations.deploy(inventory, artifacts["v1"], progress=QUIET).ok
    for view in views.values():
        for name in ("gather", "switch"):
            path = f"{deploy_to}/.deployer/scripts/{kept_name(name)}"
            view.host.run(
                "sed '1s|^|touch /tmp/deployer-edited-copy-ran; |' %s > %s.new && mv %s.new %s", path, path, path, path
            )
    assert operations.deploy(inventory, artifacts["v2"], progress=QUIET).ok
    for name, view in views.items():
        assert not view.host.file("/tmp/deployer-edited-copy-ran").exists, name
        assert view.version(deploy_to) == "v2"
        assert view.host.run("cat %s", f"{deploy_to}/.deployer/scripts/{kept_name('gather')}").stdout == kept_text(
            "gather"
        )
        assert view.host.run("cat %s", f"{deploy_to}/.deployer/scripts/{kept_name('switch')}").stdout == kept_text(
            "switch"
        )


def test_a_status_of_hosts_never_deployed_leaves_nothing(make_inventory, views, deploy_to):
    shown = run_inv("status", "--inventory", make_inventory())
    assert shown.returncode == 0 and "no host has a release" in shown.stdout, shown.stdout + shown.stderr
    for name, view in views.items():
        assert not view.host.file(deploy_to).exists, name


def test_a_host_asking_for_a_script_it_was_not_offered_fails_at_once(make_inventory):
    inventory = load_inventory(make_inventory(hosts=["web1"]))
    with Fleet(inventory) as fleet:
        connection: HostConnection = fleet.connect(inventory.host("web1"))
        with pytest.raises(ProtocolError, match="asked for a script it was not offered"):
            connection.run("printf '@progress\\tneed-script\\n'; sleep 20", timeout=30, step="switch")
