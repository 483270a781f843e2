"""Output for CI: JUnit XML from the drill, plain lines without a terminal, one JSON document."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from deployer import operations
from deployer.inventory import load_inventory
from deployer.report import Progress
from tests.conftest import run_inv, run_on_a_terminal

pytestmark = pytest.mark.fleet
QUIET = Progress(quiet=True)


def test_drill_writes_junit_with_a_case_per_phase_and_host(make_inventory, artifacts, tmp_path):
    inventory = make_inventory()
    assert operations.deploy(load_inventory(inventory), artifacts["v1"], progress=QUIET).ok
    junit = tmp_path / "drill.xml"
    result = run_inv("rollback-drill", "--inventory", inventory, "--artifact", artifacts["v2"], "--junit", str(junit))
    assert result.returncode == 0, result.stdout + result.stderr
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "rollback-drill"
    cases = suite.findall("testcase")
    names = sorted(case.get("name") for case in cases)
    phases = ("baseline", "deploy", "rollback", "redeploy")
    assert names == sorted(f"{phase} web{n}" for phase in phases for n in range(1, 5))
    assert suite.get("tests") == "16" and suite.get("failures") == "0"
    assert all(case.find("failure") is None for case in cases)


def test_drill_refused_still_writes_a_failing_junit(make_inventory, artifacts, tmp_path):
    junit = tmp_path / "drill.xml"
    result = run_inv(
        "rollback-drill", "--inventory", make_inventory(), "--artifact", artifacts["v2"], "--junit", str(junit)
    )
    assert result.returncode == 3
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    failure = suite.find("testcase/failure")
    assert failure is not None and "baseline" in failure.get("message", "")


def test_without_a_terminal_output_is_plain_lines(make_inventory, artifacts):
    result = run_inv("deploy", "--inventory", make_inventory(), "--artifact", artifacts["v1"])
    assert result.returncode == 0
    for stream in (result.stdout, result.stderr):
        assert "\x1b" not in stream and "\r" not in stream  # no colours, no cursor movement
    assert result.stdout.splitlines()[-1].startswith("deploy ") and "OK on 4/4 hosts" in result.stdout


def test_json_is_one_document_on_stdout_with_plan_hosts_phases_and_verdict(make_inventory, artifacts):
    result = run_inv("deploy", "--inventory", make_inventory(), "--artifact", artifacts["v1"], "--json")
    assert result.returncode == 0
    data = json.loads(result.stdout)  # the whole of stdout is one document; progress went to stderr
    assert data["ok"] and data["exit_code"] == 0 and data["verdict"].startswith("deploy ")
    assert {host["host"] for host in data["hosts"]} == {"web1", "web2", "web3", "web4"}
    assert [phase["name"] for phase in data["phases"]] == ["gather", "stage", "switch"]
    assert {(step["host"], step["action"]) for step in data["plan"]} == {(f"web{n}", "stage") for n in range(1, 5)}
    assert data["sessions"] == {f"web{n}": 3 for n in range(1, 5)} and data["connections"] == 4


def test_group_and_hosts_filters_touch_only_those_hosts(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory(groups={"web1": ["canary", "web"], "web2": ["web"], "web3": ["web"], "web4": ["worker"]})
    assert run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v1"]).returncode == 0
    canary = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v2"], "--group", "canary", "--json")
    assert canary.returncode == 0, canary.stdout + canary.stderr
    assert [host["host"] for host in json.loads(canary.stdout)["hosts"]] == ["web1"]
    assert {name: view.version(deploy_to) for name, view in views.items()} == {
        "web1": "v2",
        "web2": "v1",
        "web3": "v1",
        "web4": "v1",
    }
    status = run_inv("status", "--inventory", inventory, "--hosts", "web2,web4")
    assert status.returncode == 0 and "web1" not in status.stdout and "fleet consistent" in status.stdout
    unknown = run_inv("status", "--inventory", inventory, "--group", "cache")
    assert unknown.returncode == 2 and "--group: cache not in" in unknown.stderr


def test_vagrant_inventory_from_ssh_config_verifies_host_keys(local_fleet, views, tmp_path):
    config = tmp_path / "ssh-config"
    config.write_text(
        "".join(
            f"Host {h.name}\n  HostName {h.address}\n  Port {h.port}\n  User vagrant\n"
            f"  IdentityFile {local_fleet.identity_file}\n  StrictHostKeyChecking no\n"
            for h in local_fleet.hosts()
        )
    )
    nowhere = run_inv("vagrant-inventory", "--ssh-config", str(config), "--out", str(tmp_path / "no" / "v.yml"))
    assert nowhere.returncode == 2 and f"the folder {tmp_path / 'no'} does not exist" in nowhere.stderr
    assert "Traceback" not in nowhere.stderr and not (tmp_path / "no").exists()
    out = tmp_path / "vagrant.yml"
    made = run_inv("vagrant-inventory", "--ssh-config", str(config), "--out", str(out))
    assert made.returncode == 0, made.stdout + made.stderr
    assert "first use" in made.stderr
    known = (tmp_path / "vagrant.known_hosts").read_text()
    for host in local_fleet.hosts():
        assert f"[{host.address}]:{host.port} ssh-ed25519" in known
    status = run_inv("status", "--inventory", str(out), "--json")
    data = json.loads(status.stdout)
    assert all(host["reachable"] for host in data["hosts"])
    assert {host["hostname"] for host in data["hosts"]} == {h.name for h in local_fleet.hosts()}


def test_verbose_shows_debug_lines_and_every_run_leaves_a_log_file(make_inventory, artifacts, tmp_path):
    logs = tmp_path / "logs"
    env = {"DEPLOYER_LOG_DIR": str(logs)}
    quiet = run_inv("deploy", "--inventory", make_inventory(), "--artifact", artifacts["v1"], env=env)
    assert quiet.returncode == 0 and "debug:" not in quiet.stderr
    loud = run_inv("status", "--inventory", make_inventory(), "-v", env=env)
    assert "debug:" in loud.stderr and "gather exited 0" in loud.stderr and "connected to" in loud.stderr
    files = sorted(logs.glob("*.log"))
    assert [f.name.split("-")[1] for f in files] == ["deploy", "status"]
    text = files[0].read_text()
    assert "staging" in text and "web1: stage exited 0" in text and "OK on 4/4 hosts" not in text


def test_verify_checks_every_host_independently(make_inventory, views, artifacts, deploy_to, tmp_path):
    inventory = make_inventory(extra="shared: ['storage/']\nhealth_check: {command: 'test -s VERSION', retries: 0}\n")
    first = operations.deploy(load_inventory(inventory), artifacts["v1"], progress=QUIET).target
    second = operations.deploy(load_inventory(inventory), artifacts["v2"], progress=QUIET).target
    junit = tmp_path / "verify.xml"
    good = run_inv("verify", "--inventory", inventory, "--junit", str(junit))
    assert good.returncode == 0, good.stdout + good.stderr
    assert f"verify {second}: PASS on 4 host(s)" in good.stdout
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None and int(suite.get("tests", 0)) >= 4 * 6 and suite.get("failures") == "0"

    wrong = run_inv("verify", "--inventory", inventory, "--release", first)
    assert wrong.returncode == 1 and f"verify {first}: FAIL" in wrong.stdout

    views["web3"].sh("rm %s && mkdir %s", f"{deploy_to}/current/storage", f"{deploy_to}/current/storage")
    views["web2"].sh("mkdir %s", f"{deploy_to}/.deployer/lock")
    broken = run_inv("verify", "--inventory", inventory)
    assert broken.returncode == 1
    failed = [line for line in broken.stdout.splitlines() if line.startswith("FAILED")]
    assert any("test_shared_paths_are_linked" in line and "ssh://web3" in line for line in failed), failed
    assert any("test_the_lock_is_free" in line and "ssh://web2" in line for line in failed), failed
    assert len(failed) == 2


def test_drill_runs_the_testinfra_checks_after_each_phase(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory(extra="shared: ['storage/']\n")
    assert operations.deploy(load_inventory(inventory), artifacts["v1"], progress=QUIET).ok
    good = run_inv("rollback-drill", "--inventory", inventory, "--artifact", artifacts["v2"])
    assert good.returncode == 0, good.stdout + good.stderr
    # A hook that quietly breaks the shared link: the deploy itself succeeds, the independent checks do not.
    breaking = make_inventory(
        extra="shared: ['storage/']\nhooks: {after_switch: 'rm storage && mkdir storage'}\n", deploy_to=deploy_to
    )
    bad = run_inv("rollback-drill", "--inventory", breaking, "--artifact", artifacts["v3"])
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAIL in phase deploy" in bad.stdout and "test_shared_paths_are_linked" in bad.stdout
    skipped = run_inv("rollback-drill", "--inventory", inventory, "--artifact", artifacts["v2"], "--no-verify")
    assert "testinfra" not in skipped.stdout


def test_deploy_to_per_group_and_per_host(make_inventory, views, artifacts, deploy_to):
    """web1, web2 (group web) deploy to the group's folder, web3 to its own, web4 to the inventory's."""
    group_dir, own_dir = f"{deploy_to}-web", f"{deploy_to}-own"
    inventory = make_inventory(
        groups={"web1": ["web"], "web2": ["web"]}, extra=f"groups:\n  web: {{deploy_to: {group_dir}}}\n"
    )
    text = Path(inventory).read_text().replace("web3: {address:", f"web3: {{deploy_to: {own_dir}, address:")
    Path(inventory).write_text(text)
    where = {"web1": group_dir, "web2": group_dir, "web3": own_dir, "web4": deploy_to}
    for version in ("v1", "v2"):
        done = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts[version])
        assert done.returncode == 0, done.stdout + done.stderr
    for name, folder in where.items():
        assert views[name].version(folder) == "v2"
        release = views[name].current_release(folder)
        previous = views[name].previous_version(folder, release)
        assert previous.startswith(f"{folder}/releases/")  # previousVersion names the host's own folder
        for other in set(where.values()) - {folder}:
            assert views[name].current_link(other) is None
    rolled = run_inv("rollback", "--inventory", inventory)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert {name: views[name].version(folder) for name, folder in where.items()} == dict.fromkeys(where, "v1")
    status = run_inv("status", "--inventory", inventory, "--json")
    assert {h["host"]: h["deploy_to"] for h in json.loads(status.stdout)["hosts"]} == where
    checked = run_inv("verify", "--inventory", inventory)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_on_a_terminal_a_live_per_host_view_and_a_final_table(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory()
    assert run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v1"]).returncode == 0
    code, screen = run_on_a_terminal(["deploy", "--inventory", inventory, "--artifact", artifacts["v2"]])
    assert code == 0, screen
    assert "\x1b[" in screen  # drawn with terminal control sequences
    for column in ("host", "step", "upload", "state", "from", "to", "verified"):
        assert column in screen
    for name in views:
        assert name in screen
    assert "staging" in screen and "switching" in screen  # the steps each host went through
    assert re.search(r"\x1b\[3[12]m", screen)  # green/red results
    assert {view.version(deploy_to) for view in views.values()} == {"v2"}

    code, screen = run_on_a_terminal(["rollback", "--inventory", inventory], env={"NO_COLOR": "1"})
    assert code == 0, screen
    assert "rollback" in screen and not re.search(r"\x1b\[3[0-7]m", screen)  # NO_COLOR: no colours
    assert {view.version(deploy_to) for view in views.values()} == {"v1"}


def test_a_refused_deploy_exits_3_and_shows_no_plan(make_inventory, local_fleet, views, artifacts, deploy_to, tmp_path):
    inventory = Path(make_inventory())
    text = inventory.read_text()
    web4 = local_fleet.host("web4")
    inventory.write_text(
        text.replace(f"address: {web4.address}, port: {web4.port}", f"address: {web4.address}, port: 2299")
    )
    refused = run_inv("deploy", "--inventory", str(inventory), "--artifact", artifacts["v1"])
    assert refused.returncode == 3, refused.stdout + refused.stderr  # the README's table: refused as a whole
    assert "REFUSED" in refused.stdout and "web4" in refused.stdout
    assert "plan:" not in refused.stderr  # nothing is going to happen, so no plan is shown
    assert all(view.current_link(deploy_to) is None for view in views.values())

    as_json = run_inv("deploy", "--inventory", str(inventory), "--artifact", artifacts["v1"], "--json")
    assert as_json.returncode == 3 and json.loads(as_json.stdout)["exit_code"] == 3


def test_dry_run_verdict_says_nothing_changed_and_warnings_are_said_once(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory()
    assert run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v1"]).returncode == 0
    assert run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v2"]).returncode == 0
    assert run_inv("rollback", "--inventory", inventory).returncode == 0  # v2 is marked bad, the fleet pinned
    dry = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v2"], "--unpin", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    verdict = dry.stdout.strip().splitlines()[-1]
    assert "DRY RUN: would change 4/4 hosts; nothing was changed" in verdict and "OK" not in verdict
    output = dry.stdout + dry.stderr
    assert output.count("marked bad") == 1  # the warning about the bad release, once
    assert {view.version(deploy_to) for view in views.values()} == {"v1"}


def test_json_with_bad_input_is_one_document_with_the_error(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "deploy_to: relative\nuser: deploy\nssh: {identity_file: /dev/null, known_hosts: /dev/null}\nhosts: {}\n"
    )
    for args in (["deploy", "--inventory", str(bad), "--artifact", "x.tar.gz"], ["status", "--inventory", str(bad)]):
        result = run_inv(*args, "--json")
        assert result.returncode == 2
        data = json.loads(result.stdout)
        assert data["ok"] is False and data["exit_code"] == 2 and "deploy_to" in data["error"]
