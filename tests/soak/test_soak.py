"""Soak: deploy and rollback alternate many times on 20 hosts while every host reads current/VERSION.

Zero failed reads, zero hosts off target (read from each host's own disk, not through the tool),
no leaked connections, threads or file descriptors, and memory flat.
"""

from __future__ import annotations

import gc
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from deployer import operations
from deployer.inventory import load_inventory
from deployer.operations import Options
from deployer.playground.localfleet import LocalFleet
from deployer.report import Progress

pytestmark = [pytest.mark.fleet, pytest.mark.soak]
QUIET = Progress(quiet=True)
HOSTS = 20
ROUNDS = 10
DEPLOY_TO = "/srv/soak"
READER = (
    'n=0; bad=0; while [ ! -e "$1/stop-reader" ]; do '
    'if ! cat "$1/current/VERSION" >/dev/null 2>&1; then bad=$((bad+1)); fi; n=$((n+1)); sleep 0.01; done; '
    'echo "$n $bad"'
)


@pytest.fixture(scope="module")
def big_fleet(tmp_path_factory):
    fleet = LocalFleet(str(tmp_path_factory.mktemp("soak-fleet")))
    fleet.up(HOSTS, subnet="127.0.3", port=2222)
    yield fleet
    fleet.down()


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def on_disk(fleet: LocalFleet) -> dict[str, str]:
    """Each host's current release, read from its own /srv on this machine's disk."""
    return {
        host.name: os.readlink(os.path.join(host.srv, "soak", "current")).split("/", 1)[1] for host in fleet.hosts()
    }


def test_alternating_deploy_and_rollback_on_20_hosts(big_fleet, artifacts, tmp_path):
    inventory_path = tmp_path / "soak.yml"
    text = Path(big_fleet.inventory_path).read_text().replace('deploy_to: "/srv/app"', f"deploy_to: {DEPLOY_TO}")
    assert f"deploy_to: {DEPLOY_TO}" in text
    inventory_path.write_text(text)
    inventory = load_inventory(str(inventory_path))
    assert len(inventory.hosts) == HOSTS

    base = operations.deploy(inventory, artifacts["v1"], progress=QUIET)
    assert base.ok
    readers = [
        subprocess.Popen(
            big_fleet.ssh_command(host.name, "sh", "-c", f"'{READER}'", "reader", DEPLOY_TO),
            stdout=subprocess.PIPE,
            text=True,
        )
        for host in big_fleet.hosts()
    ]
    gc.collect()
    threads, fds, memory = threading.active_count(), open_fds(), None
    try:
        for round_ in range(ROUNDS):
            artifact = artifacts["v2" if round_ % 2 == 0 else "v3"]
            deployed = operations.deploy(inventory, artifact, options=Options(unpin=True), progress=QUIET)
            assert deployed.ok, deployed.verdict()
            assert set(on_disk(big_fleet).values()) == {deployed.target}
            back = operations.rollback(inventory, progress=QUIET)
            assert back.ok, back.verdict()
            assert set(on_disk(big_fleet).values()) == {back.target}
            assert deployed.connections == HOSTS and back.connections == HOSTS
            if round_ == 1:
                gc.collect()
                memory = rss_kib()  # after warm-up: caches and imports are in
    finally:
        for host in big_fleet.hosts():
            Path(host.srv, "soak", "stop-reader").touch()
        results = [reader.communicate(timeout=60)[0].split() for reader in readers]

    for name, (reads, failures) in zip((h.name for h in big_fleet.hosts()), results, strict=True):
        assert int(reads) > 50, f"{name}: the reader barely ran"
        assert int(failures) == 0, f"{name}: {failures} of {reads} reads of current/VERSION failed"
    deadline = time.monotonic() + 10
    while threading.active_count() > threads and time.monotonic() < deadline:
        time.sleep(0.1)  # paramiko's transport threads end shortly after close
    gc.collect()
    assert threading.active_count() <= threads, [t.name for t in threading.enumerate()]
    assert open_fds() <= fds + 2
    assert memory is not None and rss_kib() - memory < 20 * 1024, "memory grew by more than 20 MiB over the soak"
