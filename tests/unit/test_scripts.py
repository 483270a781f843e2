"""The remote scripts run locally (no SSH) with hostile inputs: nothing injects, nothing breaks."""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployer import scripts
from deployer.protocol import parse_output
from deployer.release import PreparedArtifact
from deployer.scripts import EXIT_CHANGED, EXIT_NOT_SYMLINK, EXIT_VALIDATE, command_line, exec_request, script_source
from deployer.state import parse_state

LIB = Path(__file__).resolve().parents[2] / "deployer" / "remote" / "lib.sh"


def run(command: str, stdin: bytes = b"", cwd: str | None = None, env: dict[str, str] | None = None):
    # sshd hands the command to the login shell as `sh -c COMMAND`; do the same.
    done = subprocess.run(["sh", "-c", command], input=stdin, capture_output=True, cwd=cwd, timeout=60, env=env)
    return done.returncode, parse_output(done.stdout.decode(), done.stderr.decode())


pytestmark = pytest.mark.usefixtures("remote_shell")


@pytest.fixture
def artifact(tmp_path_factory):
    tree = tmp_path_factory.mktemp("app")
    (tree / "VERSION").write_text("v1\n")
    with PreparedArtifact(str(tree)) as prepared:
        yield prepared, open(prepared.path, "rb").read()


def stage(deploy_to, release, artifact, validate="", env=None, **options):
    prepared, data = artifact
    command = command_line(
        "stage",
        deploy_to,
        release=release,
        digest=prepared.digest,
        source="upload",
        validate=validate,
        **options,
    )
    return run(command, stdin=data, env=env)


def switch(deploy_to, release, expected, mode="deploy", previous="", **options):
    command = command_line(
        "switch",
        deploy_to,
        target=release,
        expected=expected,
        mode=mode,
        previous=previous,
        history='{"op": "test"}',
        **options,
    )
    return run(command)


HOSTILE = st.text(
    alphabet=st.sampled_from(list("ab ' \" $ ( ) ` ; & | * ? \\ - ! # ~ { } < > é\t")),
    min_size=1,
    max_size=16,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=HOSTILE)
def test_full_cycle_with_hostile_deploy_to(tmp_path, artifact, name):
    # The hostile characters around commands that would create the marker if anything evaluated them.
    marker = tmp_path / "pwned"
    payload = f"$(touch {marker})`touch {marker}`;touch {marker}"
    folder = "-" + name.replace("/", "_") + payload.replace("/", "#") + name.replace("/", "_")
    deploy_to = os.path.join(tempfile.mkdtemp(dir=tmp_path), folder.replace("#", "/"))
    code, out = stage(deploy_to, "r1", artifact, validate="test -s VERSION")
    assert code == 0, out.text
    code, out = switch(deploy_to, "r1", "")
    assert code == 0, out.text
    assert os.readlink(os.path.join(deploy_to, "current")) == "releases/r1"
    with open(os.path.join(deploy_to, "current", "VERSION")) as handle:
        assert handle.read() == "v1\n"
    code, out = run(command_line("gather", deploy_to))
    state = parse_state("h", out, deploy_to)
    assert state.current == "r1" and state.releases["r1"].status == "ok"
    assert not list(tmp_path.glob("pwned*"))


def test_arguments_cannot_inject(tmp_path, artifact):
    marker = tmp_path / "pwned"
    deploy_to = str(tmp_path / f"x$(touch {marker})`touch {marker}`;touch {marker}")
    code, out = stage(deploy_to, "r1", artifact)
    assert code == 0, out.text
    code, out = switch(deploy_to, "r1", "", previous=f"$(touch {marker})\nsecond line")
    assert code == 0
    assert not marker.exists()
    with open(os.path.join(deploy_to, "releases", "r1", "previousVersion")) as handle:
        assert handle.read() == f"$(touch {marker})\nsecond line\n"


def test_switch_refuses_when_current_changed(tmp_path, artifact):
    deploy_to = str(tmp_path / "app")
    stage(deploy_to, "r1", artifact)
    stage(deploy_to, "r2", artifact)
    assert switch(deploy_to, "r1", "")[0] == 0
    code, out = switch(deploy_to, "r2", "")  # we believe there was no current: stale read
    assert code == EXIT_CHANGED and "changed since it was read" in out.error_message()
    assert os.readlink(os.path.join(deploy_to, "current")) == "releases/r1"


def test_switch_refuses_real_directory(tmp_path, artifact):
    deploy_to = str(tmp_path / "app")
    stage(deploy_to, "r1", artifact)
    os.mkdir(os.path.join(deploy_to, "current"))
    code, out = switch(deploy_to, "r1", "")
    assert code == EXIT_NOT_SYMLINK and "not a symlink" in out.error_message()
    assert os.path.isdir(os.path.join(deploy_to, "current")) and not os.path.islink(os.path.join(deploy_to, "current"))


@pytest.mark.parametrize("left", ["link", "folder"])
def test_what_a_crash_left_in_the_switchs_scratch_folder_changes_nothing(tmp_path, artifact, left):
    """The switch makes its new link in .deployer/switch, kept between switches. A link (to
    anywhere) or a folder a power cut left there under the name `current` is removed first: the
    switch goes to the release asked for, and nothing is left in the scratch folder."""
    deploy_to = str(tmp_path / "app")
    stage(deploy_to, "r1", artifact)
    stage(deploy_to, "r2", artifact)
    assert switch(deploy_to, "r1", "")[0] == 0
    stale = os.path.join(deploy_to, ".deployer", "switch", "current")
    if left == "link":
        os.symlink(str(tmp_path), stale)
    else:
        os.makedirs(os.path.join(stale, "inside"))
    code, out = switch(deploy_to, "r2", "releases/r1")
    assert code == 0, out.error_message()
    assert os.readlink(os.path.join(deploy_to, "current")) == "releases/r2"
    assert os.listdir(os.path.join(deploy_to, ".deployer", "switch")) == []
    assert os.path.isdir(tmp_path / "app" / "releases" / "r1")  # a link's target is never followed


def test_validation_failure_marks_release_failed(tmp_path, artifact):
    deploy_to = str(tmp_path / "app")
    code, out = stage(deploy_to, "r1", artifact, validate="echo broken >&2; exit 7")
    assert code == EXIT_VALIDATE
    assert out.first("validate_failed") == ["7", "broken "]
    state = parse_state("h", run(command_line("gather", deploy_to))[1], deploy_to)
    assert state.releases["r1"].status == "failed"
    assert switch(deploy_to, "r1", "")[0] != 0  # a failed release can never go live
    assert not os.path.lexists(os.path.join(deploy_to, "current"))


def test_digest_mismatch_leaves_no_release(tmp_path, artifact):
    deploy_to = str(tmp_path / "app")
    prepared, data = artifact
    code, out = run(
        command_line("stage", deploy_to, release="r1", digest="0" * 64, source="upload"),
        stdin=data,
    )
    assert code != 0 and "digest mismatch" in out.error_message()
    assert not os.path.exists(os.path.join(deploy_to, "releases", "r1"))


def test_an_upload_that_is_not_a_tarball_fails_as_unpacking_not_as_digest(tmp_path):
    """gzip gives up at the first bytes; the rest of the upload (more than a pipe holds) is still
    kept whole and checked: the verdict is the unpacking, never a digest mismatch from a copy cut
    short when the unpacking side stopped reading (a race lost in CI under BusyBox ash)."""
    deploy_to = str(tmp_path / "app")
    data = b"this is not gzip data\n" * 30000
    digest = hashlib.sha256(data).hexdigest()
    code, out = run(command_line("stage", deploy_to, release="r1", digest=digest, source="upload"), stdin=data)
    assert code == 30 and "unpacking failed" in out.error_message() and "gzip" in out.error_message()
    assert not os.path.exists(os.path.join(deploy_to, "releases", "r1"))
    assert os.listdir(os.path.join(deploy_to, ".deployer", "artifacts")) == []  # nothing cached


def test_release_folders_are_never_reused(tmp_path, artifact):
    deploy_to = str(tmp_path / "app")
    assert stage(deploy_to, "r1", artifact)[0] == 0
    code, out = stage(deploy_to, "r1", artifact)
    assert code != 0 and "never reused" in out.error_message()


def gather_locking(deploy_to, token):
    return command_line("gather", deploy_to, lock="take", lock_token=token, lock_info=f'{{"who": "{token}"}}')


def test_lock_is_taken_by_exactly_one_of_many_simultaneous_runs(tmp_path):
    deploy_to = str(tmp_path / "app")
    processes = [
        subprocess.Popen(["sh", "-c", gather_locking(deploy_to, f"t{i}")], stdout=subprocess.PIPE, text=True)
        for i in range(24)
    ]
    outputs = [parse_output(process.communicate(timeout=60)[0]) for process in processes]
    taken = [i for i, out in enumerate(outputs) if out.first("lock") == ["taken"]]
    assert len(taken) == 1
    holder = f"t{taken[0]}"
    for i, out in enumerate(outputs):
        if i != taken[0]:
            # Held, naming the holder: the lock is published whole, never seen without its details
            assert out.first("lock") == ["held", holder, f'{{"who": "{holder}"}}']
    # the losers' folders went (also those a quicker run's lock swallowed)
    assert sorted(os.listdir(os.path.join(deploy_to, ".deployer", "lock"))) == ["boot", "info"]
    assert [name for name in os.listdir(os.path.join(deploy_to, ".deployer")) if name.startswith("lock.")] == []
    # Taking it again with the holder's token is fine (one run, several phases); others still see it held.
    assert run(gather_locking(deploy_to, holder))[1].first("lock") == ["taken"]
    # Only the holder's token (or "*", inv unlock) removes it.
    assert run(command_line("finish", deploy_to, unlock="someone-else"))[1].first("unlocked") is None
    assert os.path.isdir(os.path.join(deploy_to, ".deployer", "lock"))
    assert run(command_line("finish", deploy_to, unlock=holder))[1].first("unlocked") == []
    assert not os.path.exists(os.path.join(deploy_to, ".deployer", "lock"))


def test_a_lock_taken_before_the_hosts_last_boot_is_cleared_by_the_next_run_that_takes_it(tmp_path):
    """After a power cut every session of the run that held the lock is gone, and fencing keeps that
    run from acting again: the next run takes the lock, saying whose it cleared. A lock of this
    boot stays held; one of an earlier boot is shown as such to a run that only reads."""
    deploy_to = str(tmp_path / "app")
    old_run = "a" * 32
    assert run(gather_locking(deploy_to, old_run))[1].first("lock") == ["taken"]
    boot = Path(deploy_to, ".deployer", "lock", "boot")
    assert boot.read_text() == Path("/proc/sys/kernel/random/boot_id").read_text()
    assert run(gather_locking(deploy_to, "b" * 32))[1].first("lock")[:2] == ["held", old_run]  # this boot

    boot.write_text("00000000-0000-0000-0000-000000000000\n")  # as left by the boot before a power cut
    read = run(command_line("gather", deploy_to))[1]
    assert read.first("lock")[:2] == ["held", old_run]
    assert any("taken before this host's last boot" in warning for warning in read.warnings())
    code, out = run(gather_locking(deploy_to, "c" * 32))
    assert code == 0 and out.first("lock") == ["taken"]
    assert out.warnings() == [
        "cleared a lock taken before this host's last boot (run aaaaaaaaaaaa): "
        "no session of that run survived the reboot"
    ]
    assert Path(deploy_to, ".deployer", "lock", "info").read_text().startswith("c" * 32)
    assert not Path(deploy_to, ".deployer", "lock.stale").exists()


def test_prune_removes_listed_releases_but_never_current_and_drops_unused_cache(tmp_path, artifact):
    deploy_to = str(tmp_path / "app")
    for release in ("r1", "r2", "r3"):
        assert stage(deploy_to, release, artifact)[0] == 0
    assert switch(deploy_to, "r2", "")[0] == 0
    code, out = run(command_line("finish", deploy_to, prune="r1 r2 ../etc"))
    assert code == 0
    assert [fields[0] for fields in out.all("pruned")] == ["r1"]
    assert sorted(os.listdir(os.path.join(deploy_to, "releases"))) == ["r2", "r3"]
    assert not os.path.exists(os.path.join(deploy_to, ".deployer", "meta", "r1"))
    # r2 and r3 still use the artifact: the cached copy stays until no release uses it.
    prepared, _data = artifact
    assert os.path.exists(os.path.join(deploy_to, ".deployer", "artifacts", prepared.digest + ".tar.gz"))


def test_shared_paths_are_linked_and_seeded_once(tmp_path, artifact):
    deploy_to = str(tmp_path / "app")
    assert stage(deploy_to, "r1", artifact, shared="VERSION\ndata/")[0] == 0
    release = os.path.join(deploy_to, "releases", "r1")
    assert os.readlink(os.path.join(release, "VERSION")) == os.path.join(
        os.path.realpath(deploy_to), "shared", "VERSION"
    )
    with open(os.path.join(deploy_to, "shared", "VERSION")) as handle:
        assert handle.read() == "v1\n"  # seeded from the first release that had it
    with open(os.path.join(deploy_to, "shared", "VERSION"), "w") as handle:
        handle.write("kept\n")
    assert stage(deploy_to, "r2", artifact, shared="VERSION\ndata/")[0] == 0
    with open(os.path.join(deploy_to, "releases", "r2", "VERSION")) as handle:
        assert handle.read() == "kept\n"
    assert os.path.isdir(os.path.join(deploy_to, "releases", "r2", "data"))


def test_missing_shared_file_fails_staging_clearly(tmp_path, artifact):
    deploy_to = str(tmp_path / "app")
    code, out = stage(deploy_to, "r1", artifact, shared=".env")
    assert code == 20 and "shared file .env is missing" in out.error_message()
    assert not os.path.exists(os.path.join(deploy_to, "releases", "r1"))


def test_health_check_retries_then_reports_failure_after_switching(tmp_path, artifact):
    deploy_to = str(tmp_path / "app")
    counter = tmp_path / "attempts"
    stage(deploy_to, "r1", artifact)
    code, out = switch(
        deploy_to, "r1", "", health=f"echo x >> {counter}; exit 3", health_retries=2, health_interval=0, unlock="tok"
    )
    assert code == 62
    assert out.first("health")[:3] == ["failed", "3", "3"]
    assert counter.read_text().count("x") == 3
    assert os.readlink(os.path.join(deploy_to, "current")) == "releases/r1"  # switched; the caller reverts


def test_parse_options_refuses_bad_names(tmp_path):
    code, out = run(exec_request("gather", script_source("gather"), [str(tmp_path), "Bad-Name=1"]))
    assert code == 10 and "bad option name" in out.error_message()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=40))
def test_environment_arrives_intact_over_stdin_never_on_the_command_line(tmp_path, artifact, value):
    from deployer.inventory import EnvVar

    value = "S3CR3T-" + value
    from deployer.phases import env_block

    class Holder:
        env = (EnvVar("SECRET_VALUE", value, True), EnvVar("PLAIN", "x y", False))
        sudo_password = ""

    deploy_to = tempfile.mkdtemp(dir=tmp_path)
    prepared, data = artifact
    out_file = os.path.join(deploy_to, "seen")
    command = command_line(
        "stage",
        deploy_to,
        release="r1",
        digest=prepared.digest,
        source="upload",
        validate=f'printf "%s|%s" "$SECRET_VALUE" "$PLAIN" > {out_file}',
        env="1",
    )
    assert "S3CR3T" not in command
    code, out = run(command, stdin=env_block(Holder()) + data)  # type: ignore[arg-type]
    assert code == 0, out.text
    with open(out_file, encoding="utf-8", newline="") as handle:
        assert handle.read() == value + "|x y"  # byte for byte, trailing newlines included


def test_history_is_stamped_with_the_controllers_time_never_the_hosts(tmp_path, artifact):
    deploy_to = str(tmp_path / "app")
    stage(deploy_to, "r1", artifact)
    code, out = switch(deploy_to, "r1", "", after_switch="exit 3", now="2001-02-03T04:05:06Z")
    assert code == 61 and out.has("switched")
    events = [json.loads(line) for line in open(os.path.join(deploy_to, ".deployer", "history.jsonl"))]
    hook = next(event for event in events if event.get("op") == "hook")
    assert hook["time"] == "2001-02-03T04:05:06Z"


def test_validate_is_bounded_by_its_time_limit(tmp_path, artifact):
    deploy_to = str(tmp_path / "app")
    code, out = stage(deploy_to, "r1", artifact, validate="sleep 60", validate_timeout="1")
    assert code == EXIT_VALIDATE and out.first("validate_failed")[0] == "124"  # stopped by the limit


def test_validate_is_bounded_even_without_timeout_1(tmp_path, artifact):
    """A host without timeout(1) (macOS): the POSIX watchdog stops the command and what it started."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "sleep", "kill", "tar", "gzip", "tee", "mkdir", "mv", "rm", "sha256sum", "cat", "tail", "tr"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    for tool in ("cut", "sed", "df", "awk", "dirname", "sync", "ln", "readlink", "pwd", "ls", "grep", "ps", "od"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    for tool in ("find", "head", "chmod"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    deploy_to = str(tmp_path / "app")
    late = tmp_path / "late"
    started = time.monotonic()
    code, output = stage(
        deploy_to,
        "r1",
        artifact,
        validate=f"(sleep 3; echo late > {late}) & sleep 60",
        validate_timeout="1",
        env={"PATH": str(bin_dir)},
    )
    assert code == EXIT_VALIDATE, output.stderr
    assert output.first("validate_failed")[0] == "124"  # stopped by the limit, as timeout(1) says it
    time.sleep(max(0.0, started + 4 - time.monotonic()))
    assert not late.exists(), "a process the command started outlived the limit"


@pytest.mark.parametrize("separators", [(", ", ": "), (",", ":")], ids=["default", "compact"])
def test_the_last_switch_is_found_however_history_lines_are_spaced(tmp_path, artifact, separators):
    """The rerun rule ("a rerun completes the same rollback") reads the last switch from the history:
    gather's pattern must find what phases.history_line writes, whatever the JSON spacing."""
    from deployer.phases import history_line  # noqa: PLC0415

    deploy_to = str(tmp_path / "app")
    stage(deploy_to, "r1", artifact)
    stage(deploy_to, "r2", artifact)
    switch(deploy_to, "r1", "")
    switch(deploy_to, "r2", "releases/r1")
    switch(deploy_to, "r1", "releases/r2", mode="rollback")
    line = json.dumps(json.loads(history_line("rollback", "r2", "r1", run_id="run1")), separators=separators)
    with open(os.path.join(deploy_to, ".deployer", "history.jsonl"), "a") as handle:
        handle.write(line + "\n" + '{"op": "hook", "release": "r1", "result": "failed"}\n')
    state = parse_state("h", run(command_line("gather", deploy_to))[1], deploy_to)
    assert state.last_op is not None and (state.last_op["op"], state.last_op["to"]) == ("rollback", "r1")


def test_a_history_line_of_any_length_reaches_the_controller_cut_at_16_kib(tmp_path, artifact):
    """A damaged or planted history line (here 300 KB that looks like a switch) is data: gather
    reports at most its first 16 KiB, and the line before it is not taken for the last switch."""
    deploy_to = str(tmp_path / "app")
    stage(deploy_to, "r1", artifact)
    switch(deploy_to, "r1", "")
    huge = '{"op": "rollback", "to": "' + "x" * 300_000 + '"}'
    with open(os.path.join(deploy_to, ".deployer", "history.jsonl"), "a") as handle:
        handle.write(huge + "\n")
    code, output = run(command_line("gather", deploy_to))
    assert code == 0, output.error_message()
    assert output.first("last_op") == [huge[:16384]]


LOGIN_SHELLS = ["sh", "bash", "tcsh", "fish", "busybox sh"]


@pytest.mark.parametrize("login_shell", LOGIN_SHELLS)
def test_the_exec_request_means_the_same_to_every_login_shell(tmp_path, login_shell):
    """sshd runs `LOGIN_SHELL -c REQUEST`: csh's `!` and newlines, fish's backslashes, quotes and
    bytes outside ASCII in any argument all reach the script unchanged."""
    if shutil.which(login_shell.split()[0]) is None:
        pytest.fail(f"{login_shell} is not installed (./dev.sh setup installs it)")
    hostile = "a'b\"c!d\\e\\\\f\ng\th $HOME `id` ; é \\0101 %s !! \\n"
    program = 'printf "%s\\n" "$#"; for arg in "$@"; do printf "[%s]\\n" "$arg"; done'
    request = exec_request("test", program, [str(tmp_path), hostile, ""])
    done = subprocess.run([*login_shell.split(), "-c", request], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == f"3\n[{tmp_path}]\n[{hostile}]\n[]\n"


def test_a_bounded_command_that_ends_at_once_leaves_only_its_own_stderr(tmp_path):
    """The watchdog is stopped as soon as the command ends, sometimes before its trap is set: the
    shell then reported the watchdog "Terminated" into the command's log (a race, seen in
    validate_failed tails). 200 quick commands in a row: every log holds what the command said."""
    lib = (Path(scripts.__file__).parent / "remote" / "lib.sh").read_text()
    loop = """
fails=0 i=0
while [ "$i" -lt 200 ]; do
    run_bounded 5 sh -c 'echo broken >&2; exit 7' 2>"$1"
    code=$?
    if [ "$code" != 7 ] || [ "$(cat "$1")" != broken ]; then fails=$((fails + 1)); fi
    i=$((i + 1))
done
echo "$fails"
"""
    done = subprocess.run(
        [*scripts.REMOTE_SHELL.split(), "-c", lib + loop, "bounded", str(tmp_path / "err")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.stdout.strip() == "0", done.stdout + done.stderr


def test_no_file_anyone_can_make_turns_a_good_step_into_a_timeout(tmp_path):
    """The watchdog's verdict is its exit status: a file another local user makes at a guessable path
    (the old `$TMPDIR/deployer-fired.<pid>`) changes nothing; a real timeout is still 124."""
    shell = scripts.REMOTE_SHELL  # each of the shells a host may have as /bin/sh, in turn
    lib = (Path(scripts.__file__).parent / "remote" / "lib.sh").read_text()
    probe = """
run_bounded 5 sh -c 'touch "$TMPDIR/deployer-fired.$PPID"; exit 0'
echo "good $?"
run_bounded 1 sh -c 'sleep 30'
echo "slow $?"
"""
    done = subprocess.run(
        [*shell.split(), "-c", lib + probe, "bounded"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        check=False,
    )
    assert done.stdout.split("\n")[:2] == ["good 0", "slow 124"], done.stdout + done.stderr


def test_the_watchdog_stops_what_ignores_term_even_after_the_top_process_exited(tmp_path):
    """`run_bounded 1 sh -c '(trap "" TERM; sleep 30; ...) & wait'`: TERM ends the top process at
    once, its child ignores TERM. Before, the caller then stopped the watchdog before its KILL and
    the child lived on (and acted 30 s later); now it is gone when run_bounded returns."""
    pid_file, late = tmp_path / "child.pid", tmp_path / "late"
    command = f"(trap \"\" TERM; sh -c 'echo $$ > {pid_file}; exec sleep 30'; echo late > {late}) & wait"
    started = time.monotonic()
    done = subprocess.run(
        [*scripts.REMOTE_SHELL.split(), "-c", f'. "{LIB}"; run_bounded 1 sh -c "$1"; echo "status $?"', "sh", command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "status 124", done.stderr
    assert time.monotonic() - started < 15
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 3  # KILL was sent before run_bounded returned; dying takes a moment
    state = "R"
    while state not in ("gone", "Z") and time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            state = "gone"
        time.sleep(0.05)
    assert state in ("gone", "Z"), f"the child that ignored TERM still runs ({state})"
    assert not late.exists()


def test_the_watchdogs_kill_leaves_no_parent_time_to_act_on_its_childs_death(tmp_path):
    """30 subshells ignore TERM, each waiting on a `sleep` before it writes a line. The watchdog's
    KILL went to the saved tree in no order: a subshell whose `sleep` was killed first wrote its
    line before its own KILL arrived (seen in CI under load; this test failed on that script in all three shells).
    Now the tree is stopped first, then killed: no line is ever written, nothing is left."""
    late, pids = tmp_path / "late", tmp_path / "pids"
    branches = (
        'i=0; while [ "$i" -lt 30 ]; do '
        '(trap "" TERM; sh -c "echo \\$\\$ >> $2; exec sleep 30"; echo late >> "$1") & i=$((i + 1)); '
        "done; wait"
    )
    done = subprocess.run(
        [
            *scripts.REMOTE_SHELL.split(),
            "-c",
            f'. "{LIB}"; run_bounded 1 sh -c "$1" sh "$2" "$3"; echo "status $?"',
            "sh",
            branches,
            str(late),
            str(pids),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "status 124", done.stderr
    sleeps = [int(pid) for pid in pids.read_text().split()]
    assert len(sleeps) == 30
    time.sleep(0.5)  # a subshell that survived would write now
    assert not late.exists(), late.read_text()
    for pid in sleeps:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        assert state == "Z", f"sleep {pid} still runs ({state})"


def test_a_step_stops_with_everything_it_started_when_its_session_goes_away(tmp_path):
    """The session's stderr is closed (sshd does so when the controller closes the channel or dies)
    while a step runs under the watchdog. Before, the step ran on to its limit (and its script on to
    its next write); now the step's tree and the script itself are gone within seconds, and the
    script does nothing more."""
    shell = scripts.REMOTE_SHELL  # each of the shells a host may have as /bin/sh, in turn
    pid_file, after = tmp_path / "step.pid", tmp_path / "after"
    step = f"sh -c 'echo $$ > {pid_file}; exec sleep 60' & wait"
    script = f'. "{LIB}"; run_bounded 120 sh -c "$1" > /dev/null 2>&1; echo after > {after}'
    with open(tmp_path / "stdout", "wb") as stdout:
        process = subprocess.Popen([*shell.split(), "-c", script, "sh", step], stdout=stdout, stderr=subprocess.PIPE)
    try:
        while not pid_file.exists() or not pid_file.read_text().strip():
            assert process.poll() is None
            time.sleep(0.05)
        assert process.stderr is not None
        assert select.select([process.stderr], [], [], 10)[0], "no heartbeat on the session's stderr"
        assert os.read(process.stderr.fileno(), 1) == b"\0"  # the heartbeat: the controller drops it
        process.stderr.close()  # the session is gone
        status = process.wait(timeout=30)  # bounded: the step's own limit is 120 s
    finally:
        process.kill()
    assert status == -9  # the script was ended, not left to run its next command
    assert not after.exists()
    pid = int(pid_file.read_text())
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        state = "gone"
    assert state in ("gone", "Z"), f"the step's sleep still runs ({state})"
