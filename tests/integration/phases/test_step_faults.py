"""Faults on real sshd hosts: hung, dying, full, read-only hosts; hand-made damage; concurrency.

Each test states the outcome a user relies on and checks it on the hosts over OpenSSH.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from deployer import operations
from deployer.inventory import load_inventory
from deployer.release import pack_directory
from deployer.report import Progress
from tests.conftest import in_host_namespace, inv_process, lock_folders, run_inv, wait_for_lock

pytestmark = pytest.mark.fleet
QUIET = Progress(quiet=True)
FAST = "{connect: 2, command: 20, stage: 60}"


def deploy(inventory, artifact, **kw):
    return operations.deploy(load_inventory(inventory), artifact, progress=QUIET, **kw)


def currents(views, deploy_to):
    return {name: view.current_release(deploy_to) for name, view in views.items()}


def test_hung_host_is_named_within_the_timeouts_and_the_rest_roll_back(
    local_fleet, make_inventory, views, artifacts, deploy_to
):
    inventory = make_inventory(timeouts=FAST)
    a = deploy(inventory, artifacts["v1"]).target
    b = deploy(inventory, artifacts["v2"]).target
    local_fleet.pause_host("web4")  # SIGSTOP: accepts TCP, never answers
    try:
        hung_deploy = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v3"])
        assert hung_deploy.returncode == 3  # refused as a whole (an unreachable host): nothing changed
        assert "web4" in hung_deploy.stdout and "no host was changed" in hung_deploy.stdout
        back = run_inv("rollback", "--inventory", inventory)
        assert back.returncode == 1
        web4 = next(line for line in back.stdout.splitlines() if line.strip().startswith("web4"))
        assert "timed out after 2s" in web4 and "Traceback" not in back.stderr
        assert [views[n].current_release(deploy_to) for n in ("web1", "web2", "web3")] == [a, a, a]
    finally:
        local_fleet.resume_host("web4")
    assert views["web4"].current_release(deploy_to) == b
    again = run_inv("rollback", "--inventory", inventory)  # completes the same rollback
    assert again.returncode == 0, again.stdout + again.stderr
    assert set(currents(views, deploy_to).values()) == {a}


def test_host_dying_mid_validation_switches_no_host_and_a_rerun_succeeds(
    local_fleet, make_inventory, views, artifacts, deploy_to
):
    base = deploy(make_inventory(), artifacts["v1"]).target
    slow = make_inventory(validate='if [ "$(hostname)" = web2 ]; then sleep 5; fi; sh bin/check', timeouts=FAST)
    process = inv_process("deploy", "--inventory", slow, "--artifact", artifacts["v2"])
    deadline = time.monotonic() + 30
    while "validating" not in views["web2"].host.run("cat %s/.deployer/meta/* 2>/dev/null", deploy_to).stdout:
        assert time.monotonic() < deadline, "web2 never started validating"
        time.sleep(0.1)
    local_fleet.stop_host("web2")
    try:
        code = process.wait(timeout=60)
        out, _err = process.communicate()
        assert code == 1 and "web2" in out
        assert [views[n].current_release(deploy_to) for n in ("web1", "web3", "web4")] == [base] * 3
    finally:
        local_fleet.start_host("web2")
        local_fleet.wait_ready(local_fleet.host("web2"))
    assert views["web2"].current_release(deploy_to) == base
    # web2 still holds the dead run's lock: provably stale (this machine, that process is gone), so
    # the rerun removes it, says so, and goes on.
    rerun = run_inv("deploy", "--inventory", make_inventory(), "--artifact", artifacts["v2"])
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "web2: warning: removing a stale lock" in rerun.stderr
    assert {view.version(deploy_to) for view in views.values()} == {"v2"}


def test_host_vanishing_from_the_network_fails_as_lost_long_before_the_step_timeout(
    local_fleet, make_inventory, views, artifacts, deploy_to
):
    """A host that loses power answers nothing at all (not even TCP): its packets are dropped here.
    With stage and validate timeouts of 15 minutes, only detecting the dead peer can end the run;
    it must, with that host failed, no host switched, and the next run converging."""
    base = deploy(make_inventory(), artifacts["v1"]).target
    held = make_inventory(
        validate=f'while [ -e "{deploy_to}/hold" ]; do sleep 0.2 2>/dev/null || sleep 1; done; sh bin/check',
        timeouts="{connect: 5, command: 900, stage: 900, validate: 900}",
    )
    views["web2"].host.run("touch %s/hold", deploy_to)
    process = inv_process("deploy", "--inventory", held, "--artifact", artifacts["v2"])
    deadline = time.monotonic() + 60
    while "validating" not in views["web2"].host.run("cat %s/.deployer/meta/* 2>/dev/null", deploy_to).stdout:
        assert time.monotonic() < deadline, "web2 never started validating"
        time.sleep(0.1)
    web2 = local_fleet.host("web2")
    rules = [
        ["OUTPUT", "-d", web2.address, "-p", "tcp", "--dport", str(web2.port), "-j", "DROP"],
        ["INPUT", "-s", web2.address, "-p", "tcp", "--sport", str(web2.port), "-j", "DROP"],
    ]
    for rule in rules:
        subprocess.run(["iptables", "-I", *rule], check=True)
    try:
        code = process.wait(timeout=180)  # a hang guard: the step timeouts are 900 s
        out, _err = process.communicate()
        assert code == 1, out
        line = next(line for line in out.splitlines() if line.strip().startswith("web2"))
        assert "lost" in line, out
        assert [views[n].current_release(deploy_to) for n in ("web1", "web3", "web4")] == [base] * 3
    finally:
        for rule in rules:
            subprocess.run(["iptables", "-D", *rule], check=True)
        views["web2"].host.run("rm -f %s/hold", deploy_to)
    again = run_inv("deploy", "--inventory", make_inventory(), "--artifact", artifacts["v2"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(set(currents(views, deploy_to).values())) == 1 and views["web2"].current_release(deploy_to) != base


def test_host_freezing_mid_command_is_cut_off_by_the_step_timeout(
    local_fleet, make_inventory, views, artifacts, deploy_to
):
    base = deploy(make_inventory(), artifacts["v1"]).target
    slow = make_inventory(validate="sleep 2; sh bin/check", timeouts="{connect: 2, command: 4, stage: 6}")
    process = inv_process("deploy", "--inventory", slow, "--artifact", artifacts["v2"])
    deadline = time.monotonic() + 30
    while "validating" not in views["web4"].host.run("cat %s/.deployer/meta/* 2>/dev/null", deploy_to).stdout:
        assert time.monotonic() < deadline, "web4 never started validating"
        time.sleep(0.1)
    local_fleet.freeze_host("web4")  # the whole machine stops: sshd, the session, the validation
    try:
        code = process.wait(timeout=60)  # bounded by timeouts.stage, then the lock release's timeout
        out, err = process.communicate()
        assert code == 1, out + err
        line = next(line for line in out.splitlines() if line.strip().startswith("web4"))
        assert "did not finish within 6s" in line
        assert [views[n].current_release(deploy_to) for n in ("web1", "web2", "web3")] == [base] * 3
    finally:
        local_fleet.thaw_host("web4")
    assert views["web4"].current_release(deploy_to) == base


@pytest.fixture
def full_disk_on_web3(local_fleet, deploy_to):
    """A 1 MiB tmpfs as web3's deploy folder, mounted inside that host's own namespace."""
    owner = "uid=$(id -u deploy),gid=$(id -g deploy)"
    mount = f"mkdir -p '{deploy_to}' && mount -t tmpfs -o size=1m,{owner} tmpfs '{deploy_to}'"
    in_host_namespace(local_fleet, "web3", mount)
    yield
    in_host_namespace(local_fleet, "web3", f"umount '{deploy_to}'")


def test_disk_full_on_one_host_fails_cleanly_and_switches_nobody(
    make_inventory, views, artifacts, deploy_to, tmp_path, full_disk_on_web3
):
    base = deploy(make_inventory(), artifacts["v1"]).target
    tree = tmp_path / "big"
    tree.mkdir()
    (tree / "VERSION").write_text("big\n")
    (tree / "blob.bin").write_bytes(os.urandom(3 << 20))  # incompressible: 3 MiB on a 1 MiB disk
    big = tmp_path / "big.tar.gz"
    pack_directory(str(tree), str(big))

    result = run_inv("deploy", "--inventory", make_inventory(), "--artifact", str(big), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    web3 = next(host for host in report["hosts"] if host["host"] == "web3")
    assert web3["status"] == "failed" and "disk full" in web3["message"]
    assert set(currents(views, deploy_to).values()) == {base}
    # Nothing half-made looks valid on web3: only the old release, no partial upload left.
    assert views["web3"].releases(deploy_to) == [base]
    assert ".part" not in views["web3"].sh("ls -a %s", f"{deploy_to}/.deployer/artifacts")
    assert not any(lock_folders(views, deploy_to).values())


def test_permission_denied_names_the_host_and_the_folder(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory()
    base = deploy(inventory, artifacts["v1"]).target
    views["web2"].sh("chmod 555 %s", f"{deploy_to}/releases")
    try:
        result = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v2"])
        assert result.returncode == 1
        line = next(line for line in result.stdout.splitlines() if line.strip().startswith("web2"))
        assert "Permission denied" in line and f"{deploy_to}/releases" in line
        assert set(currents(views, deploy_to).values()) == {base}
    finally:
        views["web2"].sh("chmod 755 %s", f"{deploy_to}/releases")


def test_release_deleted_by_hand_refuses_that_host_only(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory()
    a = deploy(inventory, artifacts["v1"]).target
    b = deploy(inventory, artifacts["v2"]).target
    views["web3"].sh("rm -rf %s", f"{deploy_to}/releases/{a}")
    result = run_inv("rollback", "--inventory", inventory)
    assert result.returncode == 1
    assert f"release {a} is not present on this host" in result.stdout
    assert currents(views, deploy_to) == {"web1": a, "web2": a, "web3": b, "web4": a}


def test_current_as_a_real_directory_is_refused_and_left_alone(make_inventory, views, artifacts, deploy_to):
    views["web1"].sh("mkdir -p %s && echo hand-made > %s", f"{deploy_to}/current", f"{deploy_to}/current/VERSION")
    result = run_inv("deploy", "--inventory", make_inventory(), "--artifact", artifacts["v1"])
    assert result.returncode == 3 and "not a symlink" in result.stdout
    assert views["web1"].sh("cat %s", f"{deploy_to}/current/VERSION") == "hand-made"
    assert all(view.current_link(deploy_to) is None for view in views.values())


def test_corrupted_lock_and_pin_files_are_data_not_crashes(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory()
    deploy(inventory, artifacts["v1"])
    views["web2"].sh(
        "mkdir %s && printf 'x\\n{{{ not json\\n' > %s",
        f"{deploy_to}/.deployer/lock",
        f"{deploy_to}/.deployer/lock/info",
    )
    locked = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v2"])
    assert locked.returncode == 3 and "without details" in locked.stderr and "Traceback" not in locked.stderr
    assert run_inv("unlock", "--inventory", inventory, "--yes").returncode == 0

    views["web1"].sh("printf '%%s\\n' 'garbage' > %s", f"{deploy_to}/.deployer/pin")
    pinned = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v2"])
    assert pinned.returncode == 3 and "pinned to an unknown release" in pinned.stdout
    assert run_inv("unpin", "--inventory", inventory).returncode == 0
    assert run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v2"]).returncode == 0
    assert {view.version(deploy_to) for view in views.values()} == {"v2"}


def test_deploy_and_rollback_started_at_the_same_moment(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory(extra="hooks: {before_switch: 'sleep 1', after_rollback: 'sleep 1'}\n")
    a = deploy(make_inventory(), artifacts["v1"]).target
    b = deploy(make_inventory(), artifacts["v2"]).target
    both = [
        inv_process("deploy", "--inventory", inventory, "--artifact", artifacts["v3"]),
        inv_process("rollback", "--inventory", inventory),
    ]
    codes = [process.wait(timeout=120) for process in both]
    assert sorted(codes) == [0, 3], [process.communicate() for process in both]
    on = set(currents(views, deploy_to).values())
    assert len(on) == 1 and on != {b}  # exactly one of them happened, on every host
    if codes[1] == 0:
        assert on == {a}
    assert not any(lock_folders(views, deploy_to).values())


def test_ctrl_c_reports_where_each_host_is(make_inventory, views, artifacts, deploy_to):
    """Ctrl-C while hosts validate: the validation waits for a file made only after the SIGINT (a
    `sleep 3` lost the race to the test's lock polling on a loaded machine: exit 0, no Ctrl-C)."""
    base = deploy(make_inventory(), artifacts["v1"]).target
    go = f"{deploy_to}-go"
    inventory = make_inventory(validate=f"while [ ! -e {go} ]; do sleep 1; done")
    process = inv_process("deploy", "--inventory", inventory, "--artifact", artifacts["v2"])
    wait_for_lock(views, deploy_to, process)
    os.killpg(process.pid, signal.SIGINT)
    for view in views.values():
        view.sh("touch %s", go)
    assert process.wait(timeout=60) == 130
    _out, err = process.communicate()
    for name in views:
        assert f"{name}: current -> {base}" in err
    assert not any(lock_folders(views, deploy_to).values())
