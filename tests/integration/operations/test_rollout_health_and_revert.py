"""Health gates, rolling batches with automatic revert, and hooks, on real sshd hosts."""

from __future__ import annotations

import json
import time

import pytest

from deployer import operations
from deployer.inventory import load_inventory
from deployer.report import REVERTED, Progress
from tests.conftest import inv_process, lock_folders, run_inv

pytestmark = pytest.mark.fleet
QUIET = Progress(quiet=True)

# Each host's hostname is its name (web1..web4): commands can fail on purpose on one host.
FAIL_ON_WEB3 = 'test "$(hostname)" != web3'


def currents(views, deploy_to):
    return {name: view.current_release(deploy_to) for name, view in views.items()}


def test_failing_health_check_in_second_batch_reverts_the_whole_fleet(make_inventory, views, artifacts, deploy_to):
    health = f"health_check: {{command: '{FAIL_ON_WEB3}', timeout: 5, retries: 1, interval: 0.2}}\n"
    inventory = make_inventory(extra=health + "rollout: {batch: 2, pause: 0}\n")
    base = operations.deploy(load_inventory(inventory), artifacts["v1"], progress=QUIET).target
    assert set(currents(views, deploy_to).values()) == {base}

    result = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v2"], "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    by_host = {host["host"]: host for host in report["hosts"]}
    assert by_host["web3"]["status"] == "failed" and "health check failed" in by_host["web3"]["message"]
    assert {by_host[name]["status"] for name in ("web1", "web2", "web4")} == {REVERTED}
    assert "back where it was" in report["verdict"]
    assert [phase["name"] for phase in report["phases"]] == [
        "gather",
        "stage",
        "switch batch 1",
        "switch batch 2",
        "revert",
    ]

    # Independently: every host is back on the old release, the new one is marked bad, no lock left.
    assert set(currents(views, deploy_to).values()) == {base}
    new_release = report["target"]
    for view in views.values():
        assert json.loads(view.sh("cat %s", f"{deploy_to}/.deployer/bad/{new_release}"))["why"].startswith(
            "deploy failed"
        )
        assert view.host.run("test -d %s", f"{deploy_to}/.deployer/lock").rc == 1
        assert view.version(deploy_to) == "v1"
    history = views["web1"].sh("cat %s", f"{deploy_to}/.deployer/history.jsonl").splitlines()
    assert [json.loads(line)["op"] for line in history][-2:] == ["deploy", "revert"]


def test_first_batch_failing_never_touches_later_batches(make_inventory, views, artifacts, deploy_to):
    health = "health_check: {command: 'test \"$(hostname)\" != web1', retries: 0}\n"
    inventory = make_inventory(extra=health + "rollout: {batch: '25%'}\n")
    base = operations.deploy(load_inventory(make_inventory()), artifacts["v1"], progress=QUIET).target
    report = operations.deploy(load_inventory(inventory), artifacts["v2"], progress=QUIET)
    assert report.exit_code == 1 and report.reverted_to_start
    statuses = {result.host: result.status for result in report.hosts}
    assert statuses == {"web1": "failed", "web2": "skipped", "web3": "skipped", "web4": "skipped"}
    assert set(currents(views, deploy_to).values()) == {base}
    # web2-4 were never switched: their history has no line for the new release.
    for name in ("web2", "web3", "web4"):
        assert report.target not in views[name].sh("cat %s", f"{deploy_to}/.deployer/history.jsonl")


def test_rollback_runs_the_health_check_and_reports_unhealthy_hosts(make_inventory, views, artifacts, deploy_to):
    # Healthy only when the release is v2: after rolling back to v1, every host is reported.
    inventory = make_inventory(extra="health_check: {command: 'grep -q v2 VERSION', retries: 0}\n")
    operations.deploy(load_inventory(make_inventory()), artifacts["v1"], progress=QUIET)
    assert operations.deploy(load_inventory(inventory), artifacts["v2"], progress=QUIET).ok
    report = operations.rollback(load_inventory(inventory), progress=QUIET)
    assert report.exit_code == 1
    assert {r.status for r in report.hosts} == {"failed"}
    assert all("health check failed" in r.message and r.verified for r in report.hosts)
    # The rollback itself happened (a rollback is not undone because the old release is unhealthy).
    assert {view.version(deploy_to) for view in views.values()} == {"v1"}


def test_before_switch_hook_failure_stops_the_deploy_and_nothing_stays_switched(
    make_inventory, views, artifacts, deploy_to
):
    hooks = 'hooks: {before_switch: \'test "$(hostname)" != web2 || { echo "cache warmup failed" >&2; exit 4; }\'}\n'
    inventory = make_inventory(extra=hooks)
    base = operations.deploy(load_inventory(make_inventory()), artifacts["v1"], progress=QUIET).target
    result = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v2"])
    assert result.returncode == 1
    assert "web2" in result.stdout and "before_switch hook failed" in result.stdout
    assert "cache warmup failed" in result.stdout
    assert set(currents(views, deploy_to).values()) == {base}


def test_hooks_run_on_hosts_and_locally_with_the_release_in_their_environment(
    local_fleet, make_inventory, views, artifacts, deploy_to, tmp_path
):
    log = tmp_path / "local-hooks.log"
    hooks = (
        "hooks:\n"
        '  after_switch: \'echo "switch $DEPLOYER_RELEASE from $DEPLOYER_PREVIOUS"'
        ' >> "$DEPLOYER_DEPLOY_TO/hooks.log"\'\n'
        '  after_rollback: \'echo "rollback $DEPLOYER_RELEASE" >> "$DEPLOYER_DEPLOY_TO/hooks.log"\'\n'
        f"  after_deploy_local: 'echo \"deployed $DEPLOYER_RELEASE to $DEPLOYER_HOSTS\" >> {log}'\n"
        f"  after_rollback_local: 'echo \"rolled back to $DEPLOYER_RELEASE\" >> {log}; exit 9'\n"
    )
    inventory = make_inventory(extra=hooks)
    first = operations.deploy(load_inventory(inventory), artifacts["v1"], progress=QUIET)
    second = operations.deploy(load_inventory(inventory), artifacts["v2"], progress=QUIET)
    assert first.ok and second.ok
    for view in views.values():
        lines = view.sh("cat %s", f"{deploy_to}/hooks.log").splitlines()
        assert lines == [f"switch {first.target} from ", f"switch {second.target} from {first.target}"]
    assert log.read_text().splitlines() == [
        f"deployed {first.target} to web1,web2,web3,web4",
        f"deployed {second.target} to web1,web2,web3,web4",
    ]

    local_fleet.stop_host("web4")
    try:
        back = run_inv("rollback", "--inventory", inventory)
    finally:
        local_fleet.start_host("web4")
        local_fleet.wait_ready(local_fleet.host("web4"))
    # after_rollback ran on every host that was switched back, although web4 was down;
    # the failing local hook makes the run fail, and says so, without undoing the rollback.
    assert back.returncode == 1
    assert "local hook after_rollback_local failed" in back.stdout and "exited 9" in back.stdout
    assert "web4" in back.stdout
    for name in ("web1", "web2", "web3"):
        assert views[name].sh("tail -n 1 %s", f"{deploy_to}/hooks.log") == f"rollback {first.target}"
        assert views[name].version(deploy_to) == "v1"
    assert log.read_text().splitlines()[-1] == f"rolled back to {first.target}"


@pytest.mark.parametrize("pool", ["", "parallel: 2\n"], ids=["all-at-once", "fewer-workers-than-hosts"])
def test_a_failed_last_batch_is_reverted_under_the_lock_with_nothing_pruned(
    make_inventory, views, artifacts, deploy_to, pool
):
    """One batch of four; web2's health check fails (slowly). Before, the three healthy hosts pruned
    their oldest release and released their lock inside their switch sessions, before the batch's
    verdict: the revert then ran on hosts nobody held, and the release the fleet went back to could
    be the one just pruned. Now they wait for the verdict: while web2 is still checking, every host
    is locked, and after the revert every host still has every release it had."""
    marker = f"{deploy_to}-web2-checking"
    check = f'if [ "$(hostname)" = web2 ]; then touch {marker}; sleep 3; exit 1; fi'
    extra = f"{pool}health_check: {{command: {json.dumps(check)}, timeout: 10, retries: 0}}\nkeep_releases: 2\n"
    inventory = make_inventory(extra=extra)
    calm = make_inventory(extra="keep_releases: 2\n")
    for version in ("v1", "v2"):
        assert run_inv("deploy", "-i", calm, "--artifact", artifacts[version]).returncode == 0
    before = {name: sorted(view.sh("ls %s", f"{deploy_to}/releases").split()) for name, view in views.items()}
    assert all(len(releases) == 2 for releases in before.values())  # a third deploy would prune one
    deploying = inv_process("deploy", "-i", inventory, "--artifact", artifacts["v3"], "--json")
    deadline = time.monotonic() + 60
    while views["web2"].host.run("test -e %s", marker).rc != 0:
        assert deploying.poll() is None and time.monotonic() < deadline, deploying.communicate()
        time.sleep(0.05)
    assert lock_folders(views, deploy_to) == {name: True for name in views}  # held while web2 checks
    out, err = deploying.communicate(timeout=120)
    assert deploying.returncode == 1, out + err
    by_host = {host["host"]: host for host in json.loads(out)["hosts"]}
    assert {by_host[name]["status"] for name in ("web1", "web3", "web4")} == {REVERTED}, by_host
    for name, view in views.items():
        releases = view.sh("ls %s", f"{deploy_to}/releases").split()
        assert set(before[name]) <= set(releases), (name, releases)  # nothing pruned
        assert view.version(deploy_to) == "v2"
    assert not any(lock_folders(views, deploy_to).values())


def test_a_host_whose_session_ends_while_it_waits_for_the_verdict_holds_the_batch(
    make_inventory, views, artifacts, deploy_to
):
    """`parallel: 2` for four hosts: web1 passed its checks and waits for the batch's verdict while
    web4's health check runs; web1's session is then killed on the host (an OOM kill, a reboot of
    sshd). Every host had passed, but web1 can no longer prune, unlock or hear a verdict: the batch
    holds, the deploy fails naming web1, and the fleet is reverted under the lock with nothing pruned."""
    marker, go = f"{deploy_to}-web4-checking", f"{deploy_to}-web4-go"
    # web4's check passes once the test says so (after web1's session is gone), within its 20 s
    check = f'if [ "$(hostname)" = web4 ]; then touch {marker}; while [ ! -e {go} ]; do sleep 0.1; done; fi'
    calm = make_inventory(extra="keep_releases: 2\n")
    for version in ("v1", "v3"):
        assert run_inv("deploy", "-i", calm, "--artifact", artifacts[version]).returncode == 0
    before = {name: sorted(view.sh("ls %s", f"{deploy_to}/releases").split()) for name, view in views.items()}
    extra = f"parallel: 2\nkeep_releases: 2\nhealth_check: {{command: {json.dumps(check)}, timeout: 20}}\n"
    deploying = inv_process("deploy", "-i", make_inventory(extra=extra), "--artifact", artifacts["v2"], "--json")
    deadline = time.monotonic() + 60
    while views["web4"].host.run("test -e %s", marker).rc != 0:
        assert deploying.poll() is None and time.monotonic() < deadline, deploying.communicate()
        time.sleep(0.05)
    session = views["web1"].sh("cat %s", f"{deploy_to}/.deployer/lock/session").split()[0]
    assert views["web1"].host.run("kill -KILL -%s", session).rc == 0  # its process group, as sshd made it
    while views["web1"].host.run("kill -0 %s", session).rc == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert views["web4"].host.run("touch %s", go).rc == 0
    out, err = deploying.communicate(timeout=120)
    assert deploying.returncode == 1, out + err
    by_host = {host["host"]: host for host in json.loads(out)["hosts"]}
    assert "its session ended while it waited for its batch's verdict" in by_host["web1"]["message"], by_host
    for name, view in views.items():
        assert view.version(deploy_to) == "v3", name  # reverted
        assert set(before[name]) <= set(view.sh("ls %s", f"{deploy_to}/releases").split()), name  # nothing pruned
    assert not any(lock_folders(views, deploy_to).values())
