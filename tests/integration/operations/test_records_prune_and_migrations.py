"""Bad marks, history, releases, drift, pruning, dry runs, shared paths and migrations on real hosts."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from deployer import operations
from deployer.inventory import load_inventory
from deployer.locate import SAMPLE_APP
from deployer.operations import Options
from deployer.release import pack_directory
from deployer.report import Progress
from tests.conftest import run_inv

pytestmark = pytest.mark.fleet
QUIET = Progress(quiet=True)
UNPIN = Options(unpin=True)


def deploy(inventory, artifact, options=None):
    return operations.deploy(load_inventory(inventory), artifact, options=options, progress=QUIET)


def rollback(inventory, to=None, options=None):
    return operations.rollback(load_inventory(inventory), to, options=options, progress=QUIET)


def build_app(folder, version, manifest=""):
    """The sample app with VERSION and, optionally, a release.yml manifest."""
    tree = folder / f"app-{version}"
    shutil.copytree(SAMPLE_APP, tree)
    (tree / "VERSION").write_text(version + "\n")
    if manifest:
        (tree / "release.yml").write_text(manifest)
    out = folder / f"app-{version}.tar.gz"
    pack_directory(str(tree), str(out))
    return str(out)


def test_rollback_never_defaults_to_a_bad_release(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory()
    a = deploy(inventory, artifacts["v1"]).target
    b = deploy(inventory, artifacts["v2"]).target
    assert rollback(inventory).target == a  # b is now marked bad
    for view in views.values():
        mark = json.loads(view.sh("cat %s", f"{deploy_to}/.deployer/bad/{b}"))
        assert mark["user"] and mark["time"] and a in mark["why"]
    # Someone goes back onto b explicitly (warned), then deploys c on top: c's previousVersion is b.
    forced = rollback(inventory, to=b)
    assert forced.ok and any("marked bad" in w for w in forced.warnings)
    c = deploy(inventory, artifacts["v3"], UNPIN).target
    assert views["web1"].previous_version(deploy_to, c) == f"{deploy_to}/releases/{b}"
    assert views["web1"].host.run("test -e %s", f"{deploy_to}/.deployer/bad/{a}").rc == 1  # forward: a not bad
    # The default target skips the bad b and goes to the release before it.
    back = rollback(inventory)
    assert back.ok and back.target == a
    assert {view.version(deploy_to) for view in views.values()} == {"v1"}


def test_deploying_a_bad_artifact_again_warns(make_inventory, artifacts):
    inventory = make_inventory()
    deploy(inventory, artifacts["v1"])
    deploy(inventory, artifacts["v2"])
    rollback(inventory)
    again = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v2"], "--unpin")
    assert again.returncode == 0
    assert "marked bad" in again.stdout and "deploying it again" in again.stdout  # in the summary, once
    assert (again.stdout + again.stderr).count("deploying it again") == 1


def test_history_and_releases_show_the_fleet_story(make_inventory, artifacts):
    inventory = make_inventory()
    a = deploy(inventory, artifacts["v1"]).target
    b = deploy(inventory, artifacts["v2"]).target
    assert rollback(inventory, options=Options(message="bad checkout")).ok

    history = json.loads(run_inv("history", "--inventory", inventory, "--json").stdout)["history"]
    assert [(e["op"], e["from"], e["to"], e["result"]) for e in history] == [
        ("rollback", b, a, "ok"),
        ("deploy", a, b, "ok"),
        ("deploy", None, a, "ok"),
    ]
    assert all(e["hosts"] == ["web1", "web2", "web3", "web4"] and e["user"] for e in history)
    assert history[0]["message"] == "bad checkout"
    text = run_inv("history", "--inventory", inventory).stdout.splitlines()
    assert text[0].split()[1] == "rollback" and "on all hosts" in text[0]

    rows = {
        row["id"]: row for row in json.loads(run_inv("releases", "--inventory", inventory, "--json").stdout)["releases"]
    }
    assert rows[a]["pinned"] and len(rows[a]["current_on"]) == 4 and not rows[a]["bad"]
    assert rows[b]["bad"]["why"] == "bad checkout" and not rows[b]["current_on"]
    listing = run_inv("releases", "--inventory", inventory).stdout
    assert "CURRENT" in listing and "PINNED" in listing and "BAD" in listing


def test_history_skips_corrupted_lines(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory()
    deploy(inventory, artifacts["v1"])
    views["web2"].sh("printf '%%s\\n' '{not json' >> %s", f"{deploy_to}/.deployer/history.jsonl")
    deploy(inventory, artifacts["v2"])
    result = run_inv("history", "--inventory", inventory, "--json")
    assert result.returncode == 0
    assert len(json.loads(result.stdout)["history"]) == 2


def test_split_fleet_refuses_deploy_unless_forced_and_status_shows_it(make_inventory, views, artifacts, deploy_to):
    fleet = make_inventory()
    a = deploy(fleet, artifacts["v1"]).target
    b = deploy(make_inventory(hosts=["web4"]), artifacts["v2"]).target  # web4 alone moves on
    status = run_inv("status", "--inventory", fleet)
    assert status.returncode == 1 and "NOT consistent" in status.stdout
    assert f"{a} on web1, web2, web3" in status.stdout and f"{b} on web4" in status.stdout

    refused = run_inv("deploy", "--inventory", fleet, "--artifact", artifacts["v3"])
    assert refused.returncode == 3 and "different releases" in refused.stdout and "--force" in refused.stdout
    assert [view.current_release(deploy_to) for view in views.values()] == [a, a, a, b]
    forced = run_inv("deploy", "--inventory", fleet, "--artifact", artifacts["v3"], "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert {view.version(deploy_to) for view in views.values()} == {"v3"}


def test_pruning_keeps_protected_releases(make_inventory, views, artifacts, deploy_to, tmp_path):
    inventory = make_inventory(extra="keep_releases: 1\nkeep_failed_releases: 0\n")
    keep_all = make_inventory(extra="keep_releases: 50\n")
    a = deploy(keep_all, artifacts["v1"]).target
    b = deploy(keep_all, artifacts["v2"]).target
    c = deploy(keep_all, artifacts["v3"]).target
    # By hand, web4 goes back to a: a release some host is on is never pruned anywhere.
    views["web4"].sh("cd %s && ln -s releases/%s tmp-link && mv -T tmp-link current", deploy_to, a)

    dry = run_inv("prune", "--inventory", inventory, "--dry-run")
    assert dry.returncode == 0 and "would remove" in dry.stdout
    assert all(view.releases(deploy_to) == sorted([a, b, c]) for view in views.values())

    done = run_inv("prune", "--inventory", inventory)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("web1", "web2", "web3"):  # current c, its previous b, and a (web4 is on it)
        assert views[name].releases(deploy_to) == sorted([a, b, c])
    assert views["web4"].releases(deploy_to) == sorted([a, c])  # b is nobody's current or previous there

    # After a rollback the pinned release and the bad one are handled by their own rules.
    fleet_back = make_inventory(extra="keep_releases: 1\nkeep_failed_releases: 0\n", hosts=["web1", "web2", "web3"])
    assert rollback(fleet_back).target == b
    d = deploy(fleet_back, build_app(tmp_path, "v4"), UNPIN).target
    for name in ("web1", "web2", "web3"):
        # d current, b its previous; c (bad, limit 0) pruned; a kept: web4 (not in this inventory) ... is
        # outside this fleet, so a goes too.
        assert views[name].releases(deploy_to) == sorted([b, d])
        assert views[name].host.run("ls %s", f"{deploy_to}/.deployer/artifacts").stdout.count(".tar.gz") == 2


def test_dry_runs_change_nothing(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory()
    a = deploy(inventory, artifacts["v1"]).target
    b = deploy(inventory, artifacts["v2"]).target
    before = {name: (view.releases(deploy_to), view.current_release(deploy_to)) for name, view in views.items()}
    dry_deploy = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v3"], "--dry-run")
    assert dry_deploy.returncode == 0 and "would stage and switch" in dry_deploy.stdout
    dry_back = run_inv("rollback", "--inventory", inventory, "--dry-run")
    assert dry_back.returncode == 0 and f"would switch to {a}" in dry_back.stdout
    after = {name: (view.releases(deploy_to), view.current_release(deploy_to)) for name, view in views.items()}
    assert after == before and {current for _releases, current in after.values()} == {b}
    assert all(view.host.run("test -e %s", f"{deploy_to}/.deployer/pin").rc == 1 for view in views.values())


def test_shared_paths_survive_deploys_and_rollbacks(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory(extra="shared: ['.env', 'storage/']\n", validate="test -f .env && test -d storage")
    missing = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v1"])
    assert missing.returncode == 1 and "shared file .env is missing" in missing.stdout
    assert all(view.current_link(deploy_to) is None for view in views.values())

    for view in views.values():
        view.sh("mkdir -p %s && echo SECRET=1 > %s", f"{deploy_to}/shared", f"{deploy_to}/shared/.env")
    assert deploy(inventory, artifacts["v1"]).ok
    views["web1"].sh("echo upload > %s", f"{deploy_to}/current/storage/file.txt")
    assert deploy(inventory, artifacts["v2"]).ok
    assert rollback(inventory).ok
    for view in views.values():
        assert view.sh("readlink %s", f"{deploy_to}/current/.env") == f"{deploy_to}/shared/.env"
        assert view.sh("cat %s", f"{deploy_to}/current/.env") == "SECRET=1"
    assert views["web1"].sh("cat %s", f"{deploy_to}/current/storage/file.txt") == "upload"


def test_migrations_run_once_and_rollback_respects_the_schema(make_inventory, views, deploy_to, tmp_path):
    log = f"{deploy_to}-migrations.log"
    migrate = f"migrate: 'echo \"$(hostname) $DEPLOYER_SCHEMA_FROM->$DEPLOYER_SCHEMA_TO\" >> {log}'\n"
    inventory = make_inventory(extra=migrate)
    s1 = build_app(tmp_path, "s1", "schema_version: 1\nmin_schema: 1\n")
    s2 = build_app(tmp_path, "s2", "schema_version: 2\nmin_schema: 1\n")  # expand: s1's code still works
    s3 = build_app(tmp_path, "s3", "schema_version: 3\nmin_schema: 3\n")  # contract: s2's code no longer does

    r1 = deploy(inventory, s1).target
    r2 = deploy(inventory, s2).target
    lines = [line for view in views.values() for line in view.host.run("cat %s", log).stdout.splitlines()]
    assert lines == ["web1 ->1", "web1 1->2"]  # once per deploy, on one host
    assert rollback(inventory).target == r1  # schema 2 is compatible down to 1
    r2 = deploy(inventory, s2, UNPIN).target  # r2 is bad now: s2 comes back under a new id
    deploy(inventory, s3, UNPIN)

    refused = run_inv("rollback", "--inventory", inventory)
    assert refused.returncode == 3 and "compatible only down to 3" in refused.stdout
    assert {view.version(deploy_to) for view in views.values()} == {"s3"}

    with_down = make_inventory(extra=migrate + f"rollback_migrations: 'echo \"down $DEPLOYER_SCHEMA_TO\" >> {log}'\n")
    back = rollback(with_down)
    assert back.ok and back.target == r2
    assert views["web1"].sh("tail -n 1 %s", log) == "down 2"
    assert all(view.sh("cat %s", f"{deploy_to}/.deployer/schema").startswith("2 1 ") for view in views.values())


def test_hosts_that_disagree_on_the_schema_refuse_a_deploy_that_would_skip_migrate(
    make_inventory, views, deploy_to, tmp_path
):
    """web3 is restored from staging with schema 55 while the fleet records 41: a release at 50 must
    not skip `migrate` on the strength of web3's record. Refused naming both; nothing changes."""
    log = f"{deploy_to}-migrations.log"
    inventory = make_inventory(extra=f"migrate: 'echo \"$DEPLOYER_SCHEMA_FROM->$DEPLOYER_SCHEMA_TO\" >> {log}'\n")
    first = deploy(inventory, build_app(tmp_path, "s41", "schema_version: 41\nmin_schema: 41\n")).target
    views["web3"].sh("printf '55 50 r-staging\\n' > %s", f"{deploy_to}/.deployer/schema")
    s50 = build_app(tmp_path, "s50", "schema_version: 50\n")
    refused = run_inv("deploy", "--inventory", inventory, "--artifact", s50)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "41 on web1, web2, web4; 55 on web3" in refused.stdout
    assert {view.current_release(deploy_to) for view in views.values()} == {first}
    assert [view.sh("cat %s", f"{deploy_to}/.deployer/schema").split()[0] for view in views.values()] == [
        "41",
        "41",
        "55",
        "41",
    ]
    assert views["web1"].sh("cat %s", log).splitlines() == ["->41"]  # migrate never ran for 50


def test_forced_rollback_past_the_schema_is_allowed_and_said(make_inventory, views, deploy_to, tmp_path):
    inventory = make_inventory()
    deploy(inventory, build_app(tmp_path, "s1", "schema_version: 1\n"))
    deploy(inventory, build_app(tmp_path, "s2", "schema_version: 2\nmin_schema: 2\n"))
    forced = run_inv("rollback", "--inventory", inventory, "--force")
    assert forced.returncode == 0 and "rolling back anyway (--force)" in forced.stdout + forced.stderr
    assert {view.version(deploy_to) for view in views.values()} == {"s1"}


def test_bad_manifest_is_refused_before_any_host_is_touched(make_inventory, views, deploy_to, tmp_path, local_fleet):
    inventory = make_inventory()
    broken = build_app(tmp_path, "x", "schema_version: two\n")
    result = run_inv("deploy", "--inventory", inventory, "--artifact", broken)
    assert result.returncode == 2 and "release.yml" in result.stderr and "schema_version" in result.stderr
    assert "Traceback" not in result.stderr
    assert all(view.host.run("test -e %s", deploy_to).rc == 1 for view in views.values())
    # ... and on each host's own disk, read apart from SSH: no folder was made anywhere under its /srv.
    relative = os.path.relpath(deploy_to, "/srv")
    assert not any(os.path.lexists(os.path.join(host.srv, relative)) for host in local_fleet.hosts())
