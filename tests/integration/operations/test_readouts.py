"""What an operator reads in an incident, checked against the hosts themselves (over OpenSSH): history
entries counted as shown, a mistyped `rollback --to` answered with the nearest name and a short list,
a pin that names what was rolled back, failures said in words, one word for hosts a refusal kept."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_inv

pytestmark = pytest.mark.fleet


def ship(inventory: str, artifact: str, version: str) -> str:
    done = run_inv("deploy", "-i", inventory, "--artifact", artifact, "--version", version, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)["target"]


def currents(views, deploy_to) -> set[str | None]:
    return {view.current_release(deploy_to) for view in views.values()}


def test_history_limit_counts_entries_as_shown_a_drill_is_one(make_inventory, artifacts, views, deploy_to):
    inventory = make_inventory()
    ship(inventory, artifacts["v1"], "v1")
    before_drill = ship(inventory, artifacts["v2"], "v2")
    drill = run_inv("rollback-drill", "-i", inventory, "--artifact", artifacts["v3"], "--version", "v3", "--no-verify")
    assert drill.returncode == 0, drill.stdout + drill.stderr
    (after_drill,) = currents(views, deploy_to)

    shown = run_inv("history", "-i", inventory, "--limit", "2", "--json")
    entries = json.loads(shown.stdout)["history"]
    assert [entry["op"] for entry in entries] == ["rollback-drill", "deploy"]
    drill_entry, deploy_entry = entries
    assert [phase["op"] for phase in drill_entry["phases"]] == ["deploy", "rollback", "deploy"]
    assert drill_entry["phases"][0]["from"] == before_drill != after_drill  # not "X -> X"
    assert drill_entry["phases"][-1]["to"] == after_drill
    assert deploy_entry["to"] == before_drill and deploy_entry["version"] == "v2"
    one = json.loads(run_inv("history", "-i", inventory, "--limit", "1", "--json").stdout)["history"]
    assert one == entries[:1]


def test_a_mistyped_rollback_target_names_the_nearest_and_changes_nothing(make_inventory, artifacts, views, deploy_to):
    inventory = make_inventory()
    older = ship(inventory, artifacts["v1"], "v2.0.0")
    newer = ship(inventory, artifacts["v2"], "v2.1.0")
    refused = run_inv("rollback", "-i", inventory, "--to", "v2.0.1", "--json")
    assert refused.returncode == 3
    report = json.loads(refused.stdout)
    why = report["refusal"]
    assert "release v2.0.1 is not on any reachable host" in why and "did you mean v2.0.0?" in why
    assert why.endswith(f"Newest first: v2.1.0 = {newer} (current), v2.0.0 = {older}.")
    assert len(why) < 400  # a short list, not every release on one long line
    assert {host["status"] for host in report["hosts"]} == {"unchanged"}
    assert {host["message"] for host in report["hosts"]} == {"not changed: the operation was refused"}
    assert currents(views, deploy_to) == {newer}  # nothing switched, nothing recorded
    for view in views.values():
        assert view.host.run("test -e %s", f"{deploy_to}/.deployer/pin").rc == 1


def test_the_pin_names_the_release_rolled_back_from(make_inventory, artifacts, views, deploy_to):
    inventory = make_inventory()
    good = ship(inventory, artifacts["v1"], "v1")
    broken = ship(inventory, artifacts["v2"], "v2")
    rolled = run_inv("rollback", "-i", inventory)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    for view in views.values():
        pin = json.loads(view.sh("cat %s", f"{deploy_to}/.deployer/pin"))
        assert pin["release"] == good and pin["why"] == f"rolled back from {broken}"
    status = run_inv("status", "-i", inventory)
    assert f"(rolled back from {broken})" in status.stdout and "?" not in status.stdout.split("PINNED", 1)[1]
    refused = run_inv("deploy", "-i", inventory, "--artifact", artifacts["v3"], "--json")
    assert refused.returncode == 3
    hosts = json.loads(refused.stdout)["hosts"]  # the same word as the refused rollback above
    assert {host["status"] for host in hosts} == {"unchanged"}
    assert {host["message"] for host in hosts} == {"not changed: the operation was refused"}


def test_a_failed_validation_is_said_in_words(make_inventory, artifacts, views, deploy_to):
    inventory = make_inventory()
    kept = ship(inventory, artifacts["v1"], "v1")
    failing = make_inventory(validate="echo the config is missing >&2; exit 7")
    done = run_inv("deploy", "-i", failing, "--artifact", artifacts["v2"], "--json")
    assert done.returncode == 1
    messages = {host["message"] for host in json.loads(done.stdout)["hosts"]}
    assert len(messages) == 1
    (message,) = messages
    assert message.startswith("validation failed: `echo the config is missing >&2; exit 7` exited 7"), message
    assert "the config is missing" in message and "exit 40" not in message and "(exit" not in message
    assert currents(views, deploy_to) == {kept}


def test_the_pin_of_a_rollback_forward_names_what_it_left(make_inventory, artifacts, views, deploy_to):
    """A rollback to a newer release marks nothing bad; its pin still names the release it left."""
    inventory = make_inventory()
    older = ship(inventory, artifacts["v1"], "v1")
    newer = ship(inventory, artifacts["v2"], "v2")
    assert ship(inventory, artifacts["v1"], "v1") == older  # back on the older release by a deploy
    rolled = run_inv("rollback", "-i", inventory, "--to", newer, "--json")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert currents(views, deploy_to) == {newer}
    for view in views.values():
        pin = json.loads(view.sh("cat %s", f"{deploy_to}/.deployer/pin"))
        assert pin["release"] == newer and pin["why"] == f"rolled back from {older}"
