"""Releases people can name: a repository deployed commit by commit with --git, its versions and
commits shown by releases, status and history and kept on every host, rollback by version and by
commit prefix, and names that mean nothing or more than one release refused, changing nothing."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import git, run_inv


@pytest.fixture
def repo(tmp_path):
    """An app repository with three commits: v1.0.0, v1.1.0, and one more after that tag."""
    folder = tmp_path / "app"
    (folder / "bin").mkdir(parents=True)
    git(folder, "init", "-q", "-b", "main")
    (folder / "bin" / "check").write_text("#!/bin/sh\n[ -s VERSION ]\n")
    for number, tag in ((1, "v1.0.0"), (2, "v1.1.0"), (3, None)):
        (folder / "VERSION").write_text(f"build {number}\n")
        git(folder, "add", ".")
        git(folder, "commit", "-q", "-m", f"change {number}")
        if tag:
            git(folder, "tag", tag)
    commits = git(folder, "rev-list", "--reverse", "HEAD").split()
    return folder, commits


def records(view, deploy_to):
    """What a switch would leave behind on a host: current, pin, bad marks, history."""
    listing = view.sh(
        "cd %s && ls -a .deployer .deployer/bad 2>/dev/null; "
        "cat .deployer/history.jsonl .deployer/pin 2>/dev/null; true",
        deploy_to,
    )
    return view.current_link(deploy_to), listing


def deployed(done):
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_a_repository_deployed_commit_by_commit_and_named_back(repo, make_inventory, views, deploy_to):
    folder, commits = repo
    inventory = make_inventory(validate="sh bin/check")
    ids = []
    for ref in ("v1.0.0", "v1.1.0", "main"):
        report = deployed(run_inv("deploy", "-i", inventory, "--git", ref, "--repo", str(folder), "--json"))
        ids.append(report["target"])
    assert report["revision"]["commit"] == commits[2] and report["revision"]["version"].startswith("v1.1.0-1-g")

    # On every host, read over its own SSH connection: the REVISION file of each release
    for view in views.values():
        for release, commit, version in zip(ids, commits, ("v1.0.0", "v1.1.0", "v1.1.0-1-g"), strict=True):
            text = view.sh("cat %s", f"{deploy_to}/releases/{release}/REVISION")
            assert f"commit {commit}" in text and f"version {version}" in text, text
        assert view.version(deploy_to) == "build 3"

    releases = json.loads(run_inv("releases", "-i", inventory, "--json").stdout)["releases"]
    assert [(row["version"], row["commit"]) for row in releases][:2] == [
        (releases[0]["version"], commits[2]),
        ("v1.1.0", commits[1]),
    ]
    table = run_inv("releases", "-i", inventory).stdout
    assert f"v1.0.0 ({commits[0][:8]})" in table
    status = run_inv("status", "-i", inventory)
    assert status.stdout.count(f"({commits[2][:8]})]") == len(views), status.stdout
    history = run_inv("history", "-i", inventory).stdout
    assert f"v1.1.0 ({commits[1][:8]})" in history and f"v1.0.0 ({commits[0][:8]})" in history

    # Back by version, then by a commit prefix
    back = deployed(run_inv("rollback", "-i", inventory, "--to", "v1.0.0", "--json"))
    assert back["target"] == ids[0] and back["revision"]["version"] == "v1.0.0"
    assert {view.version(deploy_to) for view in views.values()} == {"build 1"}
    run_inv("unpin", "-i", inventory)
    forward = deployed(run_inv("rollback", "-i", inventory, "--to", commits[1][:9], "--json"))
    assert forward["target"] == ids[1]
    assert {view.current_release(deploy_to) for view in views.values()} == {ids[1]}

    # A redeploy of a commit reuses its release (same bytes, same digest): no new folder anywhere.
    # (Not commits[2]: the first rollback marked its release bad, and a bad release is never reused.)
    run_inv("unpin", "-i", inventory)
    again = deployed(run_inv("deploy", "-i", inventory, "--git", commits[0], "--repo", str(folder), "--json"))
    assert again["target"] == ids[0]
    assert {len(view.releases(deploy_to)) for view in views.values()} == {3}


@pytest.mark.parametrize(
    "name, words",
    [
        ("v9.9.9", ["release v9.9.9 is not on any reachable host", "v1.0.0 ("]),
        ("1.0", ["not on any reachable host"]),
    ],
)
def test_a_name_that_means_nothing_is_refused_and_changes_nothing(repo, make_inventory, views, deploy_to, name, words):
    folder, _commits = repo
    inventory = make_inventory()
    for ref in ("v1.0.0", "v1.1.0"):
        deployed(run_inv("deploy", "-i", inventory, "--git", ref, "--repo", str(folder), "--json"))
    before = {
        name: (view.current_link(deploy_to), view.sh("ls -a %s/.deployer", deploy_to)) for name, view in views.items()
    }
    done = run_inv("rollback", "-i", inventory, "--to", name)
    assert done.returncode != 0
    for word in words:
        assert word in done.stdout + done.stderr, done.stdout + done.stderr
    after = {
        name: (view.current_link(deploy_to), view.sh("ls -a %s/.deployer", deploy_to)) for name, view in views.items()
    }
    assert after == before  # no pin, no bad mark, no history line


def test_a_version_two_releases_carry_is_refused_listing_both(make_inventory, views, deploy_to, tmp_path):
    inventory = make_inventory()
    ids = []
    for number in (1, 2):
        tree = tmp_path / f"build{number}"
        tree.mkdir()
        (tree / "VERSION").write_text(f"rebuild {number}\n")
        ids.append(
            deployed(run_inv("deploy", "-i", inventory, "--artifact", str(tree), "--version", "2.0.0", "--json"))[
                "target"
            ]
        )
    done = run_inv("rollback", "-i", inventory, "--to", "2.0.0")
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert "version 2.0.0 names 2 releases" in out and ids[0] in out and ids[1] in out, out
    assert {view.current_release(deploy_to) for view in views.values()} == {ids[1]}


# A "server" that resolved `current` once, when it first started, and never reloads: its health
# endpoint keeps answering for the release it loaded. after_switch starts it only the first time.
STARTS_ONCE = '[ -e "$DEPLOYER_DEPLOY_TO/served" ] || basename "$(pwd -P)" > "$DEPLOYER_DEPLOY_TO/served"'
SERVED = 'echo "ok release=$(cat "$DEPLOYER_DEPLOY_TO/served")"'


@pytest.mark.parametrize("expect", [True, False])
def test_a_server_that_never_reloaded_is_caught_by_expect_release(make_inventory, views, artifacts, deploy_to, expect):
    health = f"{{command: {json.dumps(SERVED)}, retries: 0, interval: 0" + (", expect: release}" if expect else "}")
    extra = f"hooks: {{after_switch: {json.dumps(STARTS_ONCE)}}}\nhealth_check: {health}\n"
    inventory = make_inventory(extra=extra)
    first = deployed(run_inv("deploy", "-i", inventory, "--artifact", artifacts["v1"], "--json"))["target"]
    done = run_inv("deploy", "-i", inventory, "--artifact", artifacts["v2"], "--json")
    if not expect:  # every check of the link passes while the old code is served
        assert done.returncode == 0
        return
    assert done.returncode == 1, done.stdout
    report = json.loads(done.stdout)
    assert all("does not name" in host["message"] for host in report["hosts"] if host["status"] != "skipped")
    assert {view.current_release(deploy_to) for view in views.values()} == {first}  # reverted, verified


def test_the_drill_runs_on_a_commit_and_the_pin_names_the_commit(repo, make_inventory, views, deploy_to):
    folder, commits = repo
    inventory = make_inventory(validate="sh bin/check")
    deployed(run_inv("deploy", "-i", inventory, "--git", "v1.0.0", "--repo", str(folder), "--json"))
    drill = run_inv("rollback-drill", "-i", inventory, "--git", "v1.1.0", "--repo", str(folder), "--no-verify")
    assert drill.returncode == 0, drill.stdout + drill.stderr
    assert {view.version(deploy_to) for view in views.values()} == {"build 2"}
    history = run_inv("history", "-i", inventory).stdout
    assert "rollback-drill" in history and f"v1.1.0 ({commits[1][:8]})" in history, history
    checked = run_inv("verify", "-i", inventory, "--release", "v1.1.0")
    assert checked.returncode == 0 and "PASS" in checked.stdout, checked.stdout + checked.stderr
    wrong = run_inv("verify", "-i", inventory, "--release", commits[0][:7])  # a release the fleet is not on
    assert wrong.returncode == 1 and "FAIL" in wrong.stdout
    run_inv("rollback", "-i", inventory)  # back to v1.0.0, pinned there
    status = run_inv("status", "-i", inventory).stdout
    assert f"tracking commit {commits[0][:8]} (v1.0.0)" in status, status


def test_a_controller_whose_clock_is_behind_still_records_its_release_last(make_inventory, views, artifacts, deploy_to):
    """The fleet holds a release staged two days ahead of this machine's clock (staged by another
    controller whose clock was right; this one was restored from a snapshot). Before, the new
    release sorted before it: `releases` showed it below, and a rollback from it was taken for a
    step forward and marked nothing bad. Now it is recorded just after the fleet's newest, with a
    warning naming the gap."""
    inventory = make_inventory(hosts=["web1", "web2"])
    first = json.loads(run_inv("deploy", "-i", inventory, "-a", artifacts["v1"], "--json").stdout)["target"]
    ahead = json.loads(run_inv("deploy", "-i", inventory, "-a", artifacts["v2"], "--json").stdout)["target"]
    future = (datetime.now(timezone.utc) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for name in ("web1", "web2"):
        path = f"{deploy_to}/.deployer/meta/{ahead}"
        fields = views[name].sh("cat %s", path).split(" ")
        fields[2] = future  # status digest staged_at ...
        views[name].sh("printf '%%s\\n' %s > %s", " ".join(fields), path)

    result = run_inv("deploy", "-i", inventory, "-a", artifacts["v3"], "--json")

    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    new = report["target"]
    assert any("behind the fleet" in warning and "days" in warning for warning in report["warnings"])
    assert "behind the fleet" in result.stderr
    assert new > ahead  # its id sorts after the fleet's newest
    listed = json.loads(run_inv("releases", "-i", inventory, "--json").stdout)
    order = [row["id"] for row in listed["releases"]]
    assert order.index(new) < order.index(ahead) < order.index(first)  # newest first
    back = run_inv("rollback", "-i", inventory, "--json")
    assert back.returncode == 0, back.stdout + back.stderr
    assert json.loads(back.stdout)["target"] == ahead
    for name in ("web1", "web2"):  # a rollback from it, not a step forward: it is marked bad
        assert views[name].host.run("test -f %s", f"{deploy_to}/.deployer/bad/{new}").rc == 0
