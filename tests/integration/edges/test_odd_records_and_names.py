"""Edges where odd input meets the engine: a host's record nested deep enough to break a JSON parser
fails that host only, and a version label with `+` (accepted at deploy) names its release later."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_inv

pytestmark = pytest.mark.fleet


def test_one_hosts_deeply_nested_records_fail_that_host_only(local_fleet, make_inventory, artifacts, views, deploy_to):
    inventory = make_inventory()
    assert run_inv("deploy", "-i", inventory, "--artifact", artifacts["v1"]).returncode == 0
    hostile = "[" * 100_000
    web2 = views["web2"]
    for name in ("pin", "history.jsonl"):
        web2.sh(f"printf '%s\\n' {hostile} > {deploy_to}/.deployer/{name}")
    shown = run_inv("status", "-i", inventory, "--json")
    assert "Traceback" not in shown.stderr and "RecursionError" not in shown.stderr + shown.stdout
    status = json.loads(shown.stdout)
    on = {host["host"]: host.get("current") for host in status["hosts"]}
    assert {on[name] for name in ("web1", "web3", "web4")} == {views["web1"].current_release(deploy_to)}
    history = run_inv("history", "-i", inventory, "--json")
    assert history.returncode == 0 and "Traceback" not in history.stderr
    assert json.loads(history.stdout)["history"][0]["op"] == "deploy"  # the other hosts' history still shows


def test_a_version_with_a_plus_names_its_release(make_inventory, artifacts, views, deploy_to):
    inventory = make_inventory()
    labelled = "1.4.2+build.5"
    first = run_inv("deploy", "-i", inventory, "--artifact", artifacts["v1"], "--version", labelled, "--json")
    assert first.returncode == 0, first.stderr
    release = json.loads(first.stdout)["target"]
    assert run_inv("deploy", "-i", inventory, "--artifact", artifacts["v2"], "--version", "1.4.3").returncode == 0
    back = run_inv("rollback", "-i", inventory, "--to", labelled, "--json")
    assert back.returncode == 0, back.stdout + back.stderr
    assert {view.current_release(deploy_to) for view in views.values()} == {release}  # read over OpenSSH
    checked = run_inv("verify", "-i", inventory, "--release", labelled, "--json")
    assert checked.returncode == 0 and json.loads(checked.stdout)["release"] == release, checked.stdout
    refused = run_inv("rollback", "-i", inventory, "--to", "../etc/passwd")
    assert refused.returncode == 2 and "is not a release id, version or commit" in refused.stderr
