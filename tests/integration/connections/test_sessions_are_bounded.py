"""A session's waits are bounded whatever the host answers (real sshd hosts, the tool's own
connection code): a host that breaks the fetch protocol fails that host at once, it cannot hang the run."""

from __future__ import annotations

import threading
import time

import pytest

from deployer.connection import HostConnection
from deployer.fleet import Fleet
from deployer.inventory import load_inventory
from deployer.protocol import ProtocolError

pytestmark = pytest.mark.fleet


@pytest.fixture
def connection(make_inventory):
    inventory = load_inventory(make_inventory(hosts=["web1"]))
    with Fleet(inventory) as fleet:
        yield fleet.connect(inventory.host("web1"))


def test_a_host_asking_for_a_fetch_slot_twice_fails_at_once(connection: HostConnection):
    """After `fetched` a hostile script asks again: before, the second ask took a slot and `sendall`
    spun forever on the shut channel (Ctrl-C then waited on it and left the lock)."""
    asks = "printf '@progress\\tfetch-wait\\n'"
    script = f"{asks}; read go; printf '@progress\\tfetched\\n'; {asks}; sleep 20"
    gate = threading.BoundedSemaphore(1)
    started = time.monotonic()
    with pytest.raises(ProtocolError, match="asked for a fetch slot twice"):
        connection.run(script, timeout=30, upload=[b""], gate=gate, step="stage")
    assert time.monotonic() - started < 10
    assert gate.acquire(blocking=False)  # the slot it held was given back
