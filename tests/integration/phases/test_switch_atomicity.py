"""`current` is never missing or dangling for a reader, through any number of deploys and rollbacks."""

from __future__ import annotations

import subprocess

import pytest

from deployer import operations
from deployer.inventory import load_inventory
from deployer.operations import Options
from deployer.report import Progress

pytestmark = pytest.mark.fleet
QUIET = Progress(quiet=True)

# Reads current/VERSION in a tight loop until a stop file appears; says "ready" once it runs, marks
# every failed read in a file beside (saw-missing), and prints "reads failures" at the end.
READER = (
    'echo ready; n=0; bad=0; while [ ! -e "$1/stop-reader" ]; do '
    'if ! cat "$1/current/VERSION" >/dev/null 2>&1; then bad=$((bad+1)); : > "$1/saw-missing"; fi; n=$((n+1)); done; '
    'echo "$n $bad"'
)


def start_readers(local_fleet, folder: str) -> dict[str, subprocess.Popen[str]]:
    """One reader per host, each reading before this returns (a reader still connecting would
    miss what the test does to its host first)."""
    readers = {
        host.name: subprocess.Popen(
            local_fleet.ssh_command(host.name, "sh", "-c", f"'{READER}'", "reader", f"'{folder}'"),
            stdout=subprocess.PIPE,
            text=True,
        )
        for host in local_fleet.hosts()
    }
    for name, process in readers.items():
        assert process.stdout is not None and process.stdout.readline() == "ready\n", (
            f"{name}: the reader did not start"
        )
    return readers


def stop_readers(views, readers, folder: str) -> dict[str, tuple[int, int]]:
    for view in views.values():
        view.sh("touch %s", f"{folder}/stop-reader")
    results = {}
    for name, process in readers.items():
        out, _ = process.communicate(timeout=60)
        reads, failures = (int(x) for x in out.split())
        results[name] = (reads, failures)
    return results


def test_readers_never_see_current_missing(local_fleet, make_inventory, views, artifacts, deploy_to):
    inventory = load_inventory(make_inventory())
    assert operations.deploy(inventory, artifacts["v1"], progress=QUIET).ok
    readers = start_readers(local_fleet, deploy_to)
    try:
        for round_ in range(4):
            artifact = artifacts["v2" if round_ % 2 == 0 else "v3"]
            assert operations.deploy(inventory, artifact, options=Options(unpin=True), progress=QUIET).ok
            assert operations.rollback(inventory, progress=QUIET).ok
    finally:
        results = stop_readers(views, readers, deploy_to)
    for name, (reads, failures) in results.items():
        assert reads > 100, f"{name}: the reader barely ran ({reads} reads)"
        assert failures == 0, f"{name}: {failures} of {reads} reads failed"


def test_reader_detects_a_non_atomic_switch(local_fleet, make_inventory, views, artifacts, deploy_to):
    """The detector itself works: `rm` then `ln` (what the tool never does) is caught. `current`
    stays missing until the host's reader has seen it so (bounded: 100 pauses), so the outcome does
    not depend on whether a loaded machine ran the reader inside a fixed gap."""
    inventory = load_inventory(make_inventory())
    release = operations.deploy(inventory, artifacts["v1"], progress=QUIET).target
    readers = start_readers(local_fleet, deploy_to)
    try:
        for view in views.values():
            view.sh(
                # whole seconds where sleep takes only those (the posix-strict host)
                "cd %s && rm -f saw-missing && rm current && i=0; "
                "while [ ! -e saw-missing ] && [ $i -lt 100 ]; do sleep 0.05 2>/dev/null || sleep 1; i=$((i+1)); done; "
                "ln -s releases/%s current",
                deploy_to,
                release,
            )
    finally:
        results = stop_readers(views, readers, deploy_to)
    assert all(failures > 0 for _reads, failures in results.values()), results
