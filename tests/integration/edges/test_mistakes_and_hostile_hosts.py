"""Operator mistakes change nothing, and a host's bytes are only data (on real sshd hosts).

Every state is read from the hosts independently (testinfra over OpenSSH, or the host's own
folder on this machine), never from the tool's own report."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import time

import pytest

from deployer import operations
from deployer.inventory import load_inventory
from deployer.lock import process_identity, runtime_id
from deployer.operations import Options
from deployer.report import REFUSED, Progress
from tests.conftest import inv_process, lock_folders, run_inv

pytestmark = pytest.mark.fleet
QUIET = Progress(quiet=True)
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def deploy(inventory, artifact, **kw):
    return operations.deploy(load_inventory(inventory), artifact, progress=QUIET, **kw)


def records_on(views, deploy_to):
    """What each host records about past operations: pin, bad marks, history lines (read over OpenSSH)."""
    seen = {}
    for name, view in views.items():
        run = view.host.run
        seen[name] = {
            "pin": run("cat %s", f"{deploy_to}/.deployer/pin").stdout,
            "bad": sorted(run("ls %s", f"{deploy_to}/.deployer/bad").stdout.split()),
            "history": run("cat %s", f"{deploy_to}/.deployer/history.jsonl").stdout,
            "current": view.current_release(deploy_to),
        }
    return seen


# --- operations that switch nothing record nothing ---


def test_rollback_to_a_typo_is_refused_and_changes_nothing(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory()
    first = deploy(inventory, artifacts["v1"]).target
    second = deploy(inventory, artifacts["v2"]).target
    before = records_on(views, deploy_to)

    typo = run_inv("rollback", "--inventory", inventory, "--to", "20991231T000000Z-deadbeef")
    assert typo.returncode == 3, typo.stdout + typo.stderr
    assert "release 20991231T000000Z-deadbeef is not on any reachable host" in typo.stdout
    listed = typo.stdout.split("Newest first: ", 1)[1]
    assert listed.index(second) < listed.index(first)  # newest first
    assert records_on(views, deploy_to) == before  # no pin, no bad mark, no history line

    # The next plain rollback still goes where it should, and a deploy after it is not refused by a phantom pin.
    assert operations.rollback(load_inventory(inventory), progress=QUIET).target == first
    assert {view.version(deploy_to) for view in views.values()} == {"v1"}


def test_a_failed_before_switch_hook_marks_and_pins_nothing(make_inventory, views, artifacts, deploy_to):
    deploy(make_inventory(), artifacts["v1"])
    before = records_on(views, deploy_to)
    failing = make_inventory(extra="hooks: {before_switch: 'exit 4'}\n")
    report = deploy(failing, artifacts["v2"])
    assert report.exit_code == 1
    after = records_on(views, deploy_to)
    assert {name: (a["pin"], a["bad"], a["current"]) for name, a in after.items()} == {
        name: (b["pin"], b["bad"], b["current"]) for name, b in before.items()
    }
    for name in views:  # only the hook's own failure event was added, no switch
        added = after[name]["history"][len(before[name]["history"]) :].splitlines()
        assert [json.loads(line)["op"] for line in added] == ["hook"]


# --- the drill never leaves the fleet worse than it found it ---


def test_drill_with_the_artifact_already_live_drills_live_previous_live(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory()
    first = deploy(inventory, artifacts["v1"]).target
    live = deploy(inventory, artifacts["v2"]).target
    result = run_inv("rollback-drill", "--inventory", inventory, "--artifact", artifacts["v2"], "--no-verify", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert [phase["name"] for phase in report["phases"]] == ["baseline", "deploy", "rollback", "redeploy"]
    assert f"live {live} -> {first} -> {live}" in report["phases"][0]["detail"]
    assert {view.current_release(deploy_to) for view in views.values()} == {live}
    assert all(view.host.run("test -e %s", f"{deploy_to}/.deployer/pin").rc == 1 for view in views.values())
    for view in views.values():
        history = [json.loads(line) for line in view.sh("cat %s", f"{deploy_to}/.deployer/history.jsonl").split("\n")]
        assert [(h["op"], h["to"], h.get("drill")) for h in history][-2:] == [
            ("rollback", first, "rollback"),
            ("deploy", live, "redeploy"),
        ]
    # `inv history` shows the drill as one entry, with its phases.
    shown = json.loads(run_inv("history", "--inventory", inventory, "--json").stdout)["history"]
    assert shown[0]["op"] == "rollback-drill" and shown[0]["from"] == live and shown[0]["to"] == live
    assert [(p["drill"], p["to"]) for p in shown[0]["phases"]] == [("rollback", first), ("redeploy", live)]


@pytest.mark.parametrize(
    "extra",
    [
        # the new release fails its health check: the deploy phase reverts
        "health_check: {command: '! grep -q v2 VERSION', timeout: 5, retries: 0}\n",
        # the rollback phase fails (its hook): the drill restores the starting point
        "hooks: {after_rollback: 'exit 5'}\n",
    ],
    ids=["deploy-phase-fails", "rollback-phase-fails"],
)
def test_a_failed_drill_ends_where_it_started_and_pins_nothing(make_inventory, views, artifacts, deploy_to, extra):
    baseline = deploy(make_inventory(), artifacts["v1"]).target
    inventory = make_inventory(extra=extra)
    result = run_inv("rollback-drill", "--inventory", inventory, "--artifact", artifacts["v2"], "--no-verify")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rollback-drill: FAIL" in result.stdout
    assert {view.current_release(deploy_to) for view in views.values()} == {baseline}
    assert {view.version(deploy_to) for view in views.values()} == {"v1"}
    assert all(view.host.run("test -e %s", f"{deploy_to}/.deployer/pin").rc == 1 for view in views.values())
    assert not any(lock_folders(views, deploy_to).values())
    for name in views:  # the report says where each host is
        assert re.search(rf"^\s*{name}\s.*on {baseline}", result.stdout, re.MULTILINE), result.stdout


# --- locks ---


def write_lock(view, deploy_to, token, info):
    view.sh("mkdir -p %s", f"{deploy_to}/.deployer/lock")
    view.host.run("printf '%%s\\n%%s\\n' %s %s > %s", token, json.dumps(info), f"{deploy_to}/.deployer/lock/info")


def lock_tokens(views, deploy_to):
    return {
        name: view.host.run("head -n 1 %s", f"{deploy_to}/.deployer/lock/info").stdout.strip()
        for name, view in views.items()
    }


def test_unlock_removes_only_the_lock_it_showed(make_inventory, views, deploy_to):
    inventory = load_inventory(make_inventory())
    old = {"operation": "deploy", "user": "ci", "controller": "gone", "pid": 1, "time": "2026-12-01T00:00:00Z"}
    for view in views.values():
        write_lock(view, deploy_to, "token-shown", old)

    def confirm_while_a_new_run_takes_the_lock(question: str) -> bool:
        assert "deploy by ci@gone" in question
        for view in views.values():  # a new run takes the lock while the question waits
            view.sh("rm -rf %s", f"{deploy_to}/.deployer/lock")
            write_lock(view, deploy_to, "token-new-run", {**old, "user": "new"})
        return True

    report = operations.unlock(inventory, confirm_while_a_new_run_takes_the_lock, progress=QUIET)
    assert lock_tokens(views, deploy_to) == {name: "token-new-run" for name in views}
    assert {result.status for result in report.hosts} == {REFUSED} and report.exit_code == 1
    assert any("changed since it was shown" in note for note in report.notes)

    # Unchanged since shown: removed, and only then.
    report = operations.unlock(inventory, lambda question: True, progress=QUIET)
    assert report.ok and not any(lock_folders(views, deploy_to).values())


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_lock_from_a_clone_with_our_machine_id_is_never_cleared(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory()
    here = process_identity(os.getpid())
    clone = {
        "operation": "deploy",
        "user": "ci",
        "controller": "clone",
        "pid": dead_pid(),
        "time": "2026-12-01T00:00:00Z",
        **here,  # same machine-id and boot id (a VM cloned from one image, a container)...
        "runtime": secrets.token_hex(16),  # ...but another runtime: not provably this controller
    }
    for view in views.values():
        write_lock(view, deploy_to, "token-clone", clone)
    refused = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v1"])
    assert refused.returncode == 3 and "locked by deploy by ci@clone" in refused.stdout + refused.stderr
    assert lock_tokens(views, deploy_to) == {name: "token-clone" for name in views}
    status = run_inv("lock-status", "--inventory", inventory)
    assert "cannot tell from here" in status.stdout and "STALE" not in status.stdout

    # The same lock naming this controller's runtime id, its process gone: provably stale, cleared.
    for view in views.values():
        write_lock(view, deploy_to, "token-ours", {**clone, "runtime": runtime_id()})
    cleared = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v1"])
    assert cleared.returncode == 0, cleared.stdout + cleared.stderr
    assert "removing a stale lock" in cleared.stderr
    assert not any(lock_folders(views, deploy_to).values())


def test_lock_wait_waits_in_a_loop_until_the_holder_is_done(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory()
    holder = {"operation": "deploy", "user": "ana", "controller": "laptop", "pid": os.getpid(), "time": "now"}
    for view in views.values():
        write_lock(view, deploy_to, "token-holder", {**holder, **process_identity(os.getpid())})
    waiting = inv_process("deploy", "--inventory", inventory, "--artifact", artifacts["v1"], "--lock-wait", "60")
    time.sleep(2.5)  # the waiter tries again and again meanwhile
    assert waiting.poll() is None
    for view in views.values():
        view.sh("rm -rf %s", f"{deploy_to}/.deployer/lock")
    assert waiting.wait(timeout=120) == 0, waiting.communicate()
    assert {view.version(deploy_to) for view in views.values()} == {"v1"}
    short = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v2"], "--lock-wait", "0.5")
    assert short.returncode == 0  # nothing held now


# --- Ctrl-C at many points: lock free afterwards, exit 130, no traceback ---


def interrupt_when(process, ready, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"ended before the moment to interrupt: {process.communicate()}"
        assert time.monotonic() < deadline, "the moment to interrupt never came"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)


def assert_clean_interrupt(process, views, deploy_to, base, expect_130=True):
    """Exit 130 (or 0 if it had finished), no traceback, no lock left, every host on the old or the
    new release with its files there."""
    code = process.wait(timeout=120)
    out, err = process.communicate()
    assert "Traceback" not in out + err and "BufferError" not in out + err, err
    if expect_130:
        assert code == 130 and "interrupted" in err, out + err
    else:
        assert code in (0, 130), out + err
    if code == 0 and "interrupted" in err:  # then it says, and the hosts show, that the operation completed
        assert "interrupted after every host switched and passed its checks" in err, err
        assert len({view.current_release(deploy_to) for view in views.values()}) == 1
    assert not any(lock_folders(views, deploy_to).values()), err
    currents = {view.current_release(deploy_to) for view in views.values()}
    new = {release for view in views.values() for release in view.releases(deploy_to)} - {base}
    assert currents <= {base} | new and len(new) <= 1, (currents, new)
    assert {view.version(deploy_to) for view in views.values()} <= {"v1", "v2"}


def host_path(local_fleet, name, deploy_to, *parts):
    return os.path.join(local_fleet.host(name).srv, os.path.relpath(deploy_to, "/srv"), *parts)


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.45, 0.7, 1.0])
def test_ctrl_c_at_any_moment_of_a_deploy(make_inventory, views, artifacts, deploy_to, delay):
    """Counted from the operation's first line: connecting, taking the lock, staging, switching."""
    base = deploy(make_inventory(), artifacts["v1"]).target
    inventory = make_inventory(extra="hooks: {before_switch: 'sleep 1'}\n")
    process = inv_process("deploy", "--inventory", inventory, "--artifact", artifacts["v2"])
    first = process.stderr.readline()  # the tool's own code runs from here on
    assert first.startswith("deploy: locking"), first
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGINT)
    assert_clean_interrupt(process, views, deploy_to, base, expect_130=False)


def test_ctrl_c_after_the_verdict_does_not_change_the_exit_status(make_inventory, views, artifacts, deploy_to):
    """Once the verdict is printed the work is done: a Ctrl-C while the process winds down (threads
    and connections closing) must not turn a successful deploy into "interrupted"."""
    deploy(make_inventory(), artifacts["v1"])
    process = inv_process("deploy", "--inventory", make_inventory(), "--artifact", artifacts["v2"])
    verdict = ""
    while not verdict.startswith("deploy ") and process.poll() is None:
        verdict = process.stdout.readline()
    assert ": OK on 4/4 hosts" in verdict, verdict
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=60) == 0
    assert not any(lock_folders(views, deploy_to).values())
    assert {view.version(deploy_to) for view in views.values()} == {"v2"}


MARK = 'touch "$DEPLOYER_DEPLOY_TO/.deployer/reached"; sleep 2'  # the host reached this step


@pytest.mark.parametrize("moment", ["validate", "before_switch", "health_check"])
def test_ctrl_c_during_a_remote_step_of_a_deploy(local_fleet, make_inventory, views, artifacts, deploy_to, moment):
    base = deploy(make_inventory(), artifacts["v1"]).target
    extra = {
        "validate": "",
        "before_switch": f"hooks: {{before_switch: '{MARK}'}}\n",
        "health_check": f"health_check: {{command: '{MARK}', timeout: 10}}\n",
    }[moment]
    inventory = make_inventory(validate=MARK if moment == "validate" else "", extra=extra)
    process = inv_process("deploy", "--inventory", inventory, "--artifact", artifacts["v2"])
    interrupt_when(process, lambda: os.path.exists(host_path(local_fleet, "web1", deploy_to, ".deployer", "reached")))
    if moment == "validate":  # before any switch: the deploy is cut short
        assert_clean_interrupt(process, views, deploy_to, base)
        return
    if moment == "before_switch":  # the hook runs in the switch's session: it ends, and may have switched
        assert_clean_interrupt(process, views, deploy_to, base, expect_130=False)
        return
    # Every host had switched; the checks running at Ctrl-C end and pass: the deploy happened, and the
    # exit status and the report say so (a CI job must not call a live release failed).
    code = process.wait(timeout=120)
    out, err = process.communicate()
    assert code == 0, out + err
    assert "deploy: interrupted after every host switched and passed its checks: 4/4 host(s) on " in err
    (new,) = {view.current_release(deploy_to) for view in views.values()}  # read over OpenSSH
    assert new != base and {view.version(deploy_to) for view in views.values()} == {"v2"}
    for name in views:  # where each host ended up, as each host says
        assert f"  {name}: current -> {new}" in err
    assert err.count("this run: deploy ok") == len(views)
    assert not any(lock_folders(views, deploy_to).values())


def test_ctrl_c_during_the_health_check_with_json_says_what_is_true(
    local_fleet, make_inventory, views, artifacts, deploy_to
):
    """`--json` after a Ctrl-C is one document naming where each host is, not only `interrupted`."""
    base = deploy(make_inventory(), artifacts["v1"]).target
    inventory = make_inventory(extra=f"health_check: {{command: '{MARK}', timeout: 10}}\n")
    process = inv_process("deploy", "--inventory", inventory, "--artifact", artifacts["v2"], "--json")
    interrupt_when(process, lambda: os.path.exists(host_path(local_fleet, "web1", deploy_to, ".deployer", "reached")))
    code = process.wait(timeout=120)
    out, err = process.communicate()
    document = json.loads(out)
    assert code == 0 == document["exit_code"] and document["ok"] is True and document["interrupted"] is True, err
    on = {entry["host"]: entry["current"] for entry in document["hosts"]}
    assert on == {name: view.current_release(deploy_to) for name, view in views.items()}  # as read over OpenSSH
    assert base not in on.values()
    assert all(entry["this_run"]["result"] == "ok" for entry in document["hosts"])


def test_ctrl_c_during_the_upload(local_fleet, make_inventory, views, artifacts, deploy_to, tmp_path):
    base = deploy(make_inventory(), artifacts["v1"]).target
    big = tmp_path / "app"
    big.mkdir()
    (big / "VERSION").write_text("v2\n")
    (big / "bin").mkdir()
    (big / "blob").write_bytes(os.urandom(48 * 1024 * 1024))
    process = inv_process("deploy", "--inventory", make_inventory(), "--artifact", str(big))

    def uploading() -> bool:
        folder = host_path(local_fleet, "web2", deploy_to, ".deployer", "artifacts")
        return os.path.isdir(folder) and any(name.endswith(".part") for name in os.listdir(folder))

    interrupt_when(process, uploading)
    assert_clean_interrupt(process, views, deploy_to, base)
    assert {view.current_release(deploy_to) for view in views.values()} == {base}


def test_ctrl_c_during_a_rollback(local_fleet, make_inventory, views, artifacts, deploy_to):
    first = deploy(make_inventory(), artifacts["v1"]).target
    deploy(make_inventory(), artifacts["v2"])
    inventory = make_inventory(extra=f"hooks: {{after_rollback: '{MARK}'}}\n")
    process = inv_process("rollback", "--inventory", inventory)
    interrupt_when(process, lambda: os.path.exists(host_path(local_fleet, "web3", deploy_to, ".deployer", "reached")))
    # the hook runs in the switch's session, after the switch: that session ends, and says so
    assert_clean_interrupt(process, views, deploy_to, first, expect_130=False)


# --- a host's bytes are data ---

HOSTILE = "printf '\\033]0;pwned\\007\\033[2J\\233\\r@pin\\t{}\\n@unlocked\\n'"


def test_hostile_validation_output_reaches_no_terminal_and_forges_nothing(make_inventory, views, artifacts, deploy_to):
    deploy(make_inventory(), artifacts["v1"])
    inventory = make_inventory(validate=f"{HOSTILE}; {HOSTILE} >&2; exit 3")
    for args in ([], ["--json"]):
        result = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v2"], *args)
        assert result.returncode == 1
        assert not CONTROL.search(result.stdout.replace("\n", "").replace("\t", "")), repr(result.stdout)
        assert not CONTROL.search(result.stderr.replace("\n", "").replace("\t", "")), repr(result.stderr)
        assert "\\x1b]0;pwned" in result.stdout + result.stderr  # shown, escaped
    assert all(view.host.run("test -e %s", f"{deploy_to}/.deployer/pin").rc == 1 for view in views.values())


def test_a_forged_pin_in_previous_version_is_only_text(make_inventory, views, artifacts, deploy_to):
    inventory = make_inventory()
    deploy(inventory, artifacts["v1"])
    release = deploy(inventory, artifacts["v2"]).target
    forged = f'{deploy_to}/releases/x\r@pin\t{{"release": "{release}"}}\r@schema\t99 99 x'
    for view in views.values():
        view.host.run("printf '%%s\\n' %s > %s", forged, f"{deploy_to}/releases/{release}/previousVersion")
    status = run_inv("status", "--inventory", inventory, "--json")
    data = json.loads(status.stdout)
    assert data["pin"] is None and data["schema"] is None
    assert all("previousVersion points outside" in " ".join(host["problems"]) for host in data["hosts"])
    again = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v3"])
    assert again.returncode == 0, again.stdout + again.stderr  # not refused as pinned
    assert {view.version(deploy_to) for view in views.values()} == {"v3"}


def test_validate_is_bounded_by_timeouts_validate(make_inventory, views, artifacts, deploy_to):
    base = deploy(make_inventory(), artifacts["v1"]).target
    inventory = make_inventory(validate="sleep 120", timeouts="{connect: 5, command: 30, stage: 300, validate: 2}")
    report = operations.deploy(load_inventory(inventory), artifacts["v2"], options=Options(), progress=QUIET)
    assert report.exit_code == 1
    assert all("stopped after timeouts.validate = 2s" in result.message for result in report.hosts), report.hosts
    assert {view.current_release(deploy_to) for view in views.values()} == {base}


# --- real-world known_hosts files ---


def test_known_hosts_hashed_by_openssh_with_markers(local_fleet, make_inventory, views, artifacts, deploy_to, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    original = open(local_fleet.known_hosts).read()
    known_hosts.write_text("# the fleet\n" + original)
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known_hosts)], check=True, capture_output=True)
    ca = tmp_path / "ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ca)], check=True)
    with open(known_hosts, "a") as handle:
        handle.write(f"@cert-authority *.example.com {open(f'{ca}.pub').read().strip()}\n")
    inventory = make_inventory(known_hosts=str(known_hosts))
    result = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v1"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "@cert-authority line skipped" in result.stderr

    web1 = local_fleet.host("web1")
    web1_key = next(
        line.split(None, 1)[1] for line in original.splitlines() if line.startswith(f"[{web1.address}]:{web1.port} ")
    )
    with open(known_hosts, "a") as handle:
        handle.write(f"@revoked * {web1_key}\n")
    revoked = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v2"])
    assert revoked.returncode == 3, revoked.stdout + revoked.stderr  # refused as a whole
    assert "REVOKED" in revoked.stdout and "Traceback" not in revoked.stderr
    assert {view.version(deploy_to) for view in views.values()} == {"v1"}  # nothing changed anywhere


def test_ctrl_c_while_a_batch_larger_than_the_pool_waits_for_its_verdict(
    local_fleet, make_inventory, views, artifacts, deploy_to
):
    """`parallel: 2` for four hosts: web1-web3 passed their checks and wait for the batch's verdict,
    holding no worker, while web4's health check runs. Ctrl-C then: the waiting hosts hold (nothing
    pruned), web4's check ends and passes, and the run says what is true: every host is on the new
    release, no lock is left, and nothing was pruned before a verdict that never came."""
    base = deploy(make_inventory(extra="keep_releases: 1\n"), artifacts["v1"]).target
    deploy(make_inventory(extra="keep_releases: 1\n"), artifacts["v3"])
    before = {name: view.releases(deploy_to) for name, view in views.items()}
    check = f'if [ "$(hostname)" = web4 ]; then {MARK}; fi'
    health = f"health_check: {{command: {json.dumps(check)}, timeout: 10}}\n"
    inventory = make_inventory(extra=f"parallel: 2\nkeep_releases: 1\n{health}")
    process = inv_process("deploy", "--inventory", inventory, "--artifact", artifacts["v2"])
    interrupt_when(process, lambda: os.path.exists(host_path(local_fleet, "web4", deploy_to, ".deployer", "reached")))
    code = process.wait(timeout=120)
    out, err = process.communicate()
    assert code == 0, out + err
    assert "deploy: interrupted after every host switched and passed its checks: 4/4 host(s)" in err, err
    assert "cut short: pruning old releases" in err, err
    (new,) = {view.current_release(deploy_to) for view in views.values()}  # read over OpenSSH
    assert new not in before["web1"] and {view.version(deploy_to) for view in views.values()} == {"v2"}
    for name, view in views.items():  # keep_releases: 1 would have pruned one: nothing before a verdict
        assert view.releases(deploy_to) == sorted([*before[name], new]), name
    assert base in before["web1"] and not any(lock_folders(views, deploy_to).values())
