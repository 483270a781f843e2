"""The fleet lock and the pin after rollback, on real sshd hosts; host state read over OpenSSH."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from deployer import operations
from deployer.inventory import load_inventory
from deployer.operations import Options
from deployer.report import Progress
from tests.conftest import inv_process, lock_folders, run_inv, wait_for_lock

pytestmark = pytest.mark.fleet
QUIET = Progress(quiet=True)


def test_two_deploys_started_at_the_same_moment_exactly_one_proceeds(make_inventory, views, artifacts, deploy_to):
    # The hook keeps the winner inside its run long enough that the two certainly overlap.
    inventory = make_inventory(extra="hooks: {before_switch: 'sleep 1'}\n")
    first = inv_process("deploy", "--inventory", inventory, "--artifact", artifacts["v1"])
    second = inv_process("deploy", "--inventory", inventory, "--artifact", artifacts["v2"])
    outcomes = [(process.wait(timeout=120), *process.communicate()) for process in (first, second)]
    codes = sorted(code for code, _out, _err in outcomes)
    assert codes == [0, 3], outcomes
    loser = next(out + err for code, out, err in outcomes if code == 3)
    assert "locked by deploy by" in loser and "inv lock-status" in loser
    winner_version = "v1" if outcomes[0][0] == 0 else "v2"
    assert {view.version(deploy_to) for view in views.values()} == {winner_version}
    # The refused run staged nothing: one release per host, and no lock is left behind.
    assert all(len(view.releases(deploy_to)) == 1 for view in views.values())
    assert not any(lock_folders(views, deploy_to).values())


def test_lock_wait_waits_for_the_running_operation(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory(extra="hooks: {before_switch: 'sleep 4'}\n")
    first = inv_process("deploy", "--inventory", inventory, "--artifact", artifacts["v1"])
    wait_for_lock(views, deploy_to, first)
    second = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v2"], "--lock-wait", "60")
    assert first.wait(timeout=120) == 0
    assert second.returncode == 0, second.stdout + second.stderr
    assert {view.version(deploy_to) for view in views.values()} == {"v2"}
    assert all(len(view.releases(deploy_to)) == 2 for view in views.values())


def test_lock_is_released_when_the_deploy_fails(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory(validate="exit 3")
    result = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v1"])
    assert result.returncode == 1
    assert not any(lock_folders(views, deploy_to).values())
    assert run_inv("lock-status", "--inventory", inventory).returncode == 0


def test_sigkill_mid_deploy_leaves_old_or_new_and_a_stale_lock_that_can_be_cleared(
    local_fleet, make_inventory, views, artifacts, deploy_to
):
    # One host per batch, each switch followed by a slow hook: the kill lands between batches.
    inventory = make_inventory(extra="rollout: {batch: 1}\nhooks: {after_switch: 'sleep 2'}\n")
    base = operations.deploy(load_inventory(inventory), artifacts["v1"], progress=QUIET)
    assert base.ok
    process = inv_process("deploy", "--inventory", inventory, "--artifact", artifacts["v2"])
    deadline = time.monotonic() + 60
    while views["web1"].current_release(deploy_to) == base.target:
        assert time.monotonic() < deadline, "the deploy never switched web1"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    time.sleep(2.5)  # let web1's hook, already running on the host, finish

    new_release = views["web1"].current_release(deploy_to)
    for name, view in views.items():
        release = view.current_release(deploy_to)
        assert release in (base.target, new_release), f"{name} is on {release}"
        assert view.version(deploy_to) in ("v1", "v2"), f"{name}: current does not resolve to a release"
    assert views["web4"].current_release(deploy_to) == base.target  # never reached

    status = run_inv("lock-status", "--inventory", inventory)
    assert status.returncode == 1 and "STALE" in status.stdout, status.stdout
    split = run_inv("status", "--inventory", inventory)
    assert split.returncode == 1 and "NOT consistent" in split.stdout

    cleared = run_inv("unlock", "--inventory", inventory, "--yes")
    assert cleared.returncode == 0, cleared.stdout + cleared.stderr
    assert not any(lock_folders(views, deploy_to).values())
    rerun = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v2"])
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert {view.current_release(deploy_to) for view in views.values()} == {new_release}


def test_unlock_without_yes_on_a_pipe_refuses_and_changes_nothing(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory()
    assert operations.deploy(load_inventory(inventory), artifacts["v1"], progress=QUIET).ok
    views["web2"].sh("mkdir %s", f"{deploy_to}/.deployer/lock")  # a lock without details
    status = run_inv("lock-status", "--inventory", inventory)
    assert status.returncode == 1 and "without details" in status.stdout
    refused = run_inv("unlock", "--inventory", inventory)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert lock_folders(views, deploy_to)["web2"]


def test_rollback_pins_the_fleet_until_unpinned(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory()
    v1 = operations.deploy(load_inventory(inventory), artifacts["v1"], progress=QUIET).target
    operations.deploy(load_inventory(inventory), artifacts["v2"], progress=QUIET)
    back = run_inv("rollback", "--inventory", inventory, "--message", "checkout broken")
    assert back.returncode == 0, back.stdout + back.stderr
    for view in views.values():
        pin = json.loads(view.sh("cat %s", f"{deploy_to}/.deployer/pin"))
        assert pin["release"] == v1 and pin["why"] == "checkout broken" and pin["user"]

    refused = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v3"])
    assert refused.returncode == 3
    assert "pinned to " + v1 in refused.stdout and "inv unpin" in refused.stdout
    assert {view.version(deploy_to) for view in views.values()} == {"v1"}
    assert all(len(view.releases(deploy_to)) == 2 for view in views.values())  # nothing staged
    status = run_inv("status", "--inventory", inventory)
    assert "PINNED: pinned to " + v1 in status.stdout and "checkout broken" in status.stdout

    unpinned = run_inv("unpin", "--inventory", inventory)
    assert unpinned.returncode == 0, unpinned.stdout + unpinned.stderr
    assert all(view.host.run("test -e %s", f"{deploy_to}/.deployer/pin").rc == 1 for view in views.values())
    again = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v3"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert {view.version(deploy_to) for view in views.values()} == {"v3"}


def test_deploy_with_unpin_removes_the_pin(make_inventory, views, artifacts, deploy_to):
    inventory = load_inventory(make_inventory())
    operations.deploy(inventory, artifacts["v1"], progress=QUIET)
    operations.deploy(inventory, artifacts["v2"], progress=QUIET)
    assert operations.rollback(inventory, progress=QUIET).ok
    report = operations.deploy(inventory, artifacts["v3"], options=Options(unpin=True), progress=QUIET)
    assert report.ok and any("removes the pin" in warning for warning in report.warnings)
    assert all(view.host.run("test -e %s", f"{deploy_to}/.deployer/pin").rc == 1 for view in views.values())


def test_ctrl_c_releases_the_lock(make_inventory, views, artifacts, deploy_to):
    """Ctrl-C while every host validates: the validation waits for a file the test makes only after
    the SIGINT (a `sleep 3` raced the test's own lock polling on a loaded machine: the deploy had
    finished, exit 0, before the Ctrl-C came)."""
    go = f"{deploy_to}-go"
    inventory = make_inventory(validate=f"while [ ! -e {go} ]; do sleep 1; done")
    assert operations.deploy(load_inventory(make_inventory()), artifacts["v1"], progress=QUIET).ok
    process = inv_process("deploy", "--inventory", inventory, "--artifact", artifacts["v2"])
    wait_for_lock(views, deploy_to, process)
    os.killpg(process.pid, signal.SIGINT)
    for view in views.values():  # the running validations may end now: the Ctrl-C is in
        view.sh("touch %s", go)
    code = process.wait(timeout=60)
    _out, err = process.communicate()
    assert code == 130 and "interrupted" in err
    assert not any(lock_folders(views, deploy_to).values())
    assert {view.version(deploy_to) for view in views.values()} == {"v1"}


def running(marker: str) -> list[int]:
    """Processes on this machine (the local fleet shares its PID namespace) whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_controller_killed_during_a_hook_leaves_nothing_acting_once_the_next_run_starts(
    make_inventory, views, artifacts, deploy_to
):
    """SIGKILL while a slow before_switch hook runs on every host, then another deploy. Before, the
    old hooks ran on beside the new run (and would have gone on to switch had their sessions not
    lost stdout); now each host's script stops its hook, and itself, within seconds of its session
    going away, and the next run clears the lock they left."""
    marker = "slow-hook-marker"  # the hook's own shell carries it (BusyBox's sh sleeps without a process)
    started = f"{deploy_to}-hook-started"
    hook = f"touch {started}; sh -c 'sleep 31; true' {marker}"
    inventory = make_inventory(extra=f"hooks: {{before_switch: {json.dumps(hook)}}}\n")
    plain = make_inventory()
    assert run_inv("deploy", "-i", plain, "--artifact", artifacts["v1"]).returncode == 0
    killed = inv_process("deploy", "-i", inventory, "--artifact", artifacts["v2"])
    deadline = time.monotonic() + 60
    while not all(view.host.run("test -e %s", started).rc == 0 for view in views.values()):
        assert killed.poll() is None and time.monotonic() < deadline, killed.communicate()
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    # Each host's script sees its session gone (the watchdog's heartbeat fails) and stops its hook
    # with everything it started. Before, the hooks ran on to their 31 s end; this wait is bounded.
    deadline = time.monotonic() + 20
    while running(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert running(marker) == [], "the hooks ran on without their controller"
    for view in views.values():  # nothing released the lock: the next run proves it stale
        assert view.host.run("test -d %s", f"{deploy_to}/.deployer/lock").rc == 0
    next_run = run_inv("deploy", "-i", plain, "--artifact", artifacts["v3"])
    assert next_run.returncode == 0, next_run.stdout + next_run.stderr
    assert "removing a stale lock" in next_run.stdout + next_run.stderr
    assert running(marker) == []  # stopped before the new run acted, not 31 s later
    assert {view.version(deploy_to) for view in views.values()} == {"v3"}
