"""Deploy, rollback and drill end to end on real sshd hosts; every state checked over OpenSSH."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import resource
from pathlib import Path

import pytest

from deployer import operations
from deployer.inventory import load_inventory
from deployer.report import Progress
from tests.conftest import lock_folders, run_inv

pytestmark = pytest.mark.fleet
QUIET = Progress(quiet=True)


def deploy(inventory, artifact, **kw):
    return operations.deploy(load_inventory(inventory), artifact, progress=QUIET, **kw)


def rollback(inventory, to=None):
    return operations.rollback(load_inventory(inventory), to, progress=QUIET)


def on_each(views, deploy_to):
    return {name: (view.current_release(deploy_to), view.version(deploy_to)) for name, view in views.items()}


@pytest.mark.smoke
def test_deploy_then_rollback_on_every_host(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory(validate="sh bin/check")
    first = deploy(inventory, artifacts["v1"])
    assert first.ok and first.exit_code == 0
    r1 = first.target
    assert on_each(views, deploy_to) == {name: (r1, "v1") for name in views}
    for view in views.values():  # a first deploy records an empty previousVersion
        assert view.previous_version(deploy_to, r1) == ""

    second = deploy(inventory, artifacts["v2"])
    assert second.ok
    r2 = second.target
    assert r2 != r1
    assert on_each(views, deploy_to) == {name: (r2, "v2") for name in views}
    for view in views.values():
        assert view.previous_version(deploy_to, r2) == f"{deploy_to}/releases/{r1}"
        assert view.sh("readlink %s", f"{deploy_to}/current") == f"releases/{r2}"  # relative link

    back = rollback(inventory)
    assert back.ok and back.target == r1
    assert on_each(views, deploy_to) == {name: (r1, "v1") for name in views}
    for view in views.values():  # the rolled-back release is kept
        assert view.releases(deploy_to) == sorted([r1, r2])


EVERYTHING_ON = (
    "shared: [storage/, logs/, cache/]\n"
    "health_check: {command: 'test -s VERSION', retries: 2}\n"
    "hooks: {before_switch: 'true', after_switch: 'true', after_rollback: 'true'}\n"
)


@pytest.mark.parametrize(
    "extra",
    ["", EVERYTHING_ON, "parallel: 2\nkeep_releases: 1\n"],
    ids=["plain", "hooks-shared-health", "fewer-workers-than-hosts"],
)
def test_one_connection_per_host_and_session_budgets(local_fleet, make_inventory, artifacts, views, deploy_to, extra):
    """Issue 6's budgets, as counts read from each sshd's own log: deploy 1 connection and 3 exec
    sessions per host, rollback 1 and 2, however many hooks and shared paths there are, and with
    fewer workers than hosts (the last batch's hosts wait for its verdict without holding one:
    before, a batch larger than `parallel` took a fourth session per host to prune and unlock)."""
    inventory = load_inventory(make_inventory(extra=extra))
    names = [host.name for host in inventory.hosts]

    def measured(operation):
        before = local_fleet.ssh_counts()
        report = operation()
        assert report.ok, report.verdict()
        after = local_fleet.ssh_counts()
        from_logs = {n: (after[n][0] - before[n][0], after[n][1] - before[n][1]) for n in names}
        assert report.connections == len(names)  # the tool's own count agrees with sshd's
        assert report.sessions == {n: sessions for n, (_c, sessions) in from_logs.items()}
        return from_logs

    if "keep_releases: 1" in extra:  # a third release, so that the measured deploys prune one
        assert operations.deploy(inventory, artifacts["v3"], progress=QUIET).ok
    first = measured(lambda: operations.deploy(inventory, artifacts["v1"], progress=QUIET))
    second = measured(lambda: operations.deploy(inventory, artifacts["v2"], progress=QUIET))
    back = measured(lambda: operations.rollback(inventory, progress=QUIET))
    assert first == second == {n: (1, 3) for n in names}
    assert back == {n: (1, 2) for n in names}
    assert not any(lock_folders(views, deploy_to).values())
    if "keep_releases: 1" in extra:  # pruned after the verdict, in those same sessions (3 without)
        assert {name: len(view.releases(deploy_to)) for name, view in views.items()} == {n: 2 for n in names}


def test_a_host_that_allows_one_session_at_a_time(local_fleet, make_inventory, views, artifacts, deploy_to):
    """A hardened sshd with `MaxSessions 1`: a host's sessions run one after the other, each closed
    before the next opens, so deploy and rollback work there within their budgets. The channel
    asked for ahead while an operation's first session runs is refused (sshd logs "no more
    sessions"), and that host is asked no more ahead on that connection: one refusal per
    operation, not one per session. sshd logs the same line when it refuses a session while it
    still counts the one just closed (a race the tool retries, one debug line per retry): those
    are counted from the tool's log and added to the 3."""
    host = local_fleet.host("web4")
    original = Path(host.config).read_text()
    local_fleet.stop_host("web4")
    try:
        Path(host.config).write_text(original.replace("MaxSessions 64", "MaxSessions 1"))
        local_fleet.start_host("web4")
        local_fleet.wait_ready(host)
        inventory = make_inventory()
        refusals = Path(host.log).read_text().count("no more sessions")
        before = local_fleet.ssh_counts()["web4"]
        kept = logging.handlers.BufferingHandler(capacity=1_000_000)
        tool_log = logging.getLogger("deployer.connection")
        level = tool_log.level
        tool_log.addHandler(kept)
        tool_log.setLevel(logging.DEBUG)
        try:
            first = deploy(inventory, artifacts["v1"])
            second = deploy(inventory, artifacts["v2"])
            back = rollback(inventory)
        finally:
            tool_log.removeHandler(kept)
            tool_log.setLevel(level)
        retried = sum("web4: a new session was refused right after" in r.getMessage() for r in kept.buffer)
        assert first.ok and second.ok and back.ok, [r.verdict() for r in (first, second, back)]
        assert back.sessions["web4"] == 2 and second.sessions["web4"] == 3
        after = local_fleet.ssh_counts()["web4"]
        assert (after[0] - before[0], after[1] - before[1]) == (3, 3 + 3 + 2)
        assert on_each(views, deploy_to) == {name: (first.target, "v1") for name in views}
        assert Path(host.log).read_text().count("no more sessions") - refusals == 3 + retried
    finally:
        local_fleet.stop_host("web4")
        Path(host.config).write_text(original)
        local_fleet.start_host("web4")
        local_fleet.wait_ready(host)


def test_a_controller_holding_more_than_1024_open_files(make_inventory, views, artifacts, deploy_to):
    """A fleet of several hundred hosts puts the tool's descriptors past 1023, where select()
    refuses to watch one (it did: a 1,000-host deploy failed reading its first session)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    held = []
    try:
        while not held or held[-1] < 1100:
            held.append(os.open(os.devnull, os.O_RDONLY))
        inventory = make_inventory()
        first = deploy(inventory, artifacts["v1"])
        second = deploy(inventory, artifacts["v2"])
        assert first.ok and second.ok
        assert on_each(views, deploy_to) == {name: (second.target, "v2") for name in views}
        back = rollback(inventory)
        assert back.ok and on_each(views, deploy_to) == {name: (first.target, "v1") for name in views}
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.smoke
def test_drill_deploys_rolls_back_and_redeploys(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory(validate="sh bin/check")
    baseline = deploy(inventory, artifacts["v1"]).target
    report = operations.drill(load_inventory(inventory), artifacts["v2"], progress=QUIET)
    assert report.ok, report.verdict()
    assert [phase.name for phase in report.phases] == ["baseline", "deploy", "rollback", "redeploy"]
    assert all(phase.ok and phase.seconds > 0 for phase in report.phases)
    final = report.target
    assert on_each(views, deploy_to) == {name: (final, "v2") for name in views}
    for view in views.values():
        assert view.previous_version(deploy_to, final) == f"{deploy_to}/releases/{baseline}"
        history = [json.loads(line) for line in view.sh("cat %s", f"{deploy_to}/.deployer/history.jsonl").splitlines()]
        assert [(h["op"], h["to"], h.get("drill")) for h in history][-3:] == [
            ("deploy", final, "deploy"),
            ("rollback", baseline, "rollback"),
            ("deploy", final, "redeploy"),
        ]
        assert view.host.run("test -e %s", f"{deploy_to}/.deployer/pin").rc == 1  # the drill pins nothing


def test_drill_without_baseline_explains(make_inventory, views, artifacts, deploy_to):
    result = run_inv("rollback-drill", "--inventory", make_inventory(), "--artifact", artifacts["v2"])
    assert result.returncode == 3
    assert "baseline" in result.stderr and "inv deploy" in result.stderr
    assert "Traceback" not in result.stderr
    assert all(view.current_link(deploy_to) is None for view in views.values())


def test_validation_failing_on_one_host_switches_no_host(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory(validate='test "$(hostname)" != web3 || { echo "web3 is not ready" >&2; exit 4; }')
    r1 = deploy(inventory, artifacts["v1"])
    assert not r1.ok  # web3 fails even on a first deploy
    for view in views.values():
        assert view.current_link(deploy_to) is None

    healthy = make_inventory(validate="true")
    base = deploy(healthy, artifacts["v1"]).target
    failing = deploy(inventory, artifacts["v2"])
    assert failing.exit_code == 1
    by_host = {r.host: r for r in failing.hosts}
    assert by_host["web3"].status == "failed" and "web3 is not ready" in by_host["web3"].message
    assert {r.status for name, r in by_host.items() if name != "web3"} == {"skipped"}
    assert on_each(views, deploy_to) == {name: (base, "v1") for name in views}
    # the staged folder stays, marked failed on web3, for inspection
    meta = views["web3"].sh("cat %s", f"{deploy_to}/.deployer/meta/{failing.target}")
    assert meta.startswith("failed ")
    assert failing.target in views["web1"].releases(deploy_to)

    # a drill failing the same way says why, not only that no host moved
    drill = operations.drill(load_inventory(inventory), artifacts["v3"], progress=QUIET)
    verdict = drill.verdict()
    assert not drill.ok and "FAIL in phase deploy" in verdict and "web3 is not ready" in verdict, verdict
    assert verdict.index("web3 is not ready") < verdict.index("expected"), verdict  # the cause comes first
    assert on_each(views, deploy_to) == {name: (base, "v1") for name in views}


def test_nothing_to_roll_back_to(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory()
    only = deploy(inventory, artifacts["v1"]).target
    result = run_inv("rollback", "--inventory", inventory)
    assert result.returncode == 3
    assert "no earlier release" in result.stdout
    assert all(view.current_release(deploy_to) == only for view in views.values())


def test_tampered_previous_version_refused_for_that_host(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory()
    r1 = deploy(inventory, artifacts["v1"]).target
    r2 = deploy(inventory, artifacts["v2"]).target
    views["web2"].sh("printf '/etc\\n' > %s", f"{deploy_to}/releases/{r2}/previousVersion")
    report = rollback(inventory)
    assert report.exit_code == 1
    by_host = {r.host: r for r in report.hosts}
    assert by_host["web2"].status == "refused" and "outside" in by_host["web2"].message
    assert views["web2"].current_release(deploy_to) == r2  # left untouched
    assert {name: views[name].current_release(deploy_to) for name in views if name != "web2"} == {
        name: r1 for name in views if name != "web2"
    }


def test_host_down_during_rollback_then_rerun_converges(local_fleet, make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory()
    r1 = deploy(inventory, artifacts["v1"]).target
    r2 = deploy(inventory, artifacts["v2"]).target
    local_fleet.stop_host("web4")
    try:
        partial = rollback(inventory)
        assert partial.exit_code == 1 and partial.target == r1
        failed = [r for r in partial.hosts if r.status == "failed"]
        assert [r.host for r in failed] == ["web4"] and "refused" in failed[0].message
        # rerun while still down: nobody is taken further back than r1
        again = rollback(inventory)
        assert again.target == r1 and again.exit_code == 1
        assert {r.host: r.status for r in again.hosts if r.host != "web4"} == {
            "web1": "unchanged",
            "web2": "unchanged",
            "web3": "unchanged",
        }
    finally:
        local_fleet.start_host("web4")
        local_fleet.wait_ready(local_fleet.host("web4"))
    assert views["web4"].current_release(deploy_to) == r2
    final = rollback(inventory)
    assert final.ok and final.target == r1
    assert {r.host: r.status for r in final.hosts} == {
        "web1": "unchanged",
        "web2": "unchanged",
        "web3": "unchanged",
        "web4": "ok",
    }
    assert all(view.current_release(deploy_to) == r1 for view in views.values())


def test_rollback_to_specific_release(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory()
    r1 = deploy(inventory, artifacts["v1"]).target
    deploy(inventory, artifacts["v2"])
    deploy(inventory, artifacts["v3"])
    result = run_inv("rollback", "--inventory", inventory, "--to", r1, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] and data["target"] == r1
    assert all(view.version(deploy_to) == "v1" for view in views.values())
    missing = run_inv("rollback", "--inventory", inventory, "--to", "no-such-release")
    assert missing.returncode == 3 and "release no-such-release is not on any reachable host" in missing.stdout
    bad = run_inv("rollback", "--inventory", inventory, "--to", "../../etc")
    assert bad.returncode == 2 and "not valid" in bad.stderr


def test_spaces_and_quotes_in_deploy_to_and_artifact_path(make_inventory, views, artifacts, tmp_path):
    deploy_to = '/srv/my app\'s "dir" $(touch /tmp/pwned)'
    weird = tmp_path / 'build output\'s "v2" $(x)'
    weird.mkdir()
    artifact = weird / "app v2.tar.gz"
    artifact.write_bytes(open(artifacts["v2"], "rb").read())
    inventory = make_inventory(deploy_to=deploy_to, validate="sh bin/check")
    assert deploy(inventory, artifacts["v1"]).ok
    result = run_inv("deploy", "--inventory", inventory, "--artifact", str(artifact))
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(view.version(deploy_to) == "v2" for view in views.values())
    assert rollback(inventory).ok
    assert all(view.version(deploy_to) == "v1" for view in views.values())
    for view in views.values():
        assert view.host.run("test -e /tmp/pwned").rc == 1


def test_deploy_same_artifact_again_resumes_instead_of_duplicating(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory()
    first = deploy(inventory, artifacts["v1"])
    again = deploy(inventory, artifacts["v1"])
    assert again.ok and again.target == first.target
    assert {r.status for r in again.hosts} == {"unchanged"}
    assert all(view.releases(deploy_to) == [first.target] for view in views.values())
