"""Fencing (the scripts run locally, no SSH): a session changes a host only while the lock holds its
run's token, checked immediately before each change, and a session the controller gave up on is
stopped by the next one before that one acts."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from deployer.protocol import parse_output
from deployer.release import PreparedArtifact
from deployer.scripts import EXIT_FENCED, command_line

pytestmark = pytest.mark.usefixtures("remote_shell_honouring_path")
TOKEN, OTHER = "a" * 32, "b" * 32

# A `sync` that hangs (a slow disk) while the flag file exists, saying when it started.
SLOW_SYNC = """#!/bin/sh
if [ -e "$SLOW_FLAG" ]; then
    : > "$SLOW_FLAG.entered"
    sleep 8
fi
exec REAL_SYNC "$@"
"""


def run(command: str, env: dict[str, str] | None = None, stdin: bytes = b""):
    done = subprocess.run(["sh", "-c", command], input=stdin, capture_output=True, env=env, timeout=60)
    return done.returncode, parse_output(done.stdout.decode(), done.stderr.decode())


@pytest.fixture
def host(tmp_path):
    """A host with releases r1 (live) and r2 staged, and the lock held by TOKEN."""
    tree = tmp_path / "app"
    tree.mkdir()
    (tree / "VERSION").write_text("v1\n")
    deploy_to = str(tmp_path / "srv")
    with PreparedArtifact(str(tree)) as prepared:
        data = Path(prepared.path).read_bytes()
        code, out = run(command_line("gather", deploy_to, lock="take", lock_token=TOKEN, lock_info="{}"))
        assert code == 0 and out.first("lock") == ["taken"]
        for release in ("r1", "r2"):
            staged = command_line("stage", deploy_to, release=release, digest=prepared.digest, fence=TOKEN)
            assert run(staged, stdin=data)[0] == 0
    switched = command_line("switch", deploy_to, target="r1", expected="", mode="deploy", history="{}", fence=TOKEN)
    assert run(switched)[0] == 0
    return deploy_to


def history_lines(deploy_to: str) -> int:
    return len(Path(deploy_to, ".deployer", "history.jsonl").read_text().splitlines())


def test_a_session_of_a_run_that_lost_the_lock_changes_nothing(host):
    deploy_to = host
    assert run(command_line("finish", deploy_to, unlock=TOKEN))[1].has("unlocked")
    assert run(command_line("gather", deploy_to, lock="take", lock_token=OTHER, lock_info="{}"))[0] == 0
    lines = history_lines(deploy_to)
    late = command_line(
        "switch", deploy_to, target="r2", expected="releases/r1", mode="deploy", history="{}", pin="{}", fence=TOKEN
    )
    code, out = run(late)
    assert code == EXIT_FENCED and "no longer holds the lock" in out.error_message()
    assert os.readlink(Path(deploy_to, "current")) == "releases/r1"
    assert history_lines(deploy_to) == lines and not Path(deploy_to, ".deployer", "pin").exists()
    assert not Path(deploy_to, "releases", "r2", "previousVersion").exists()
    finished = run(command_line("finish", deploy_to, prune="r2", mark_bad="r2", bad_info="{}", fence=TOKEN))
    assert finished[0] == EXIT_FENCED and Path(deploy_to, "releases", "r2").is_dir()


def test_a_switch_given_up_on_in_a_slow_sync_never_goes_live_after_the_revert(host, tmp_path):
    """The controller's limit ran out while the switch waited in `sync` (a slow disk) before its
    rename; the revert found `current` still on r1 ("already there, verified") and released the
    lock. Before, the abandoned session then finished its rename and put r2 live with no record;
    now the revert stops it before acting, and its own checks refuse anything after."""
    deploy_to = host
    folder = tmp_path / "bin"
    folder.mkdir()
    fake = folder / "sync"
    fake.write_text(SLOW_SYNC.replace("REAL_SYNC", shutil.which("sync") or "/bin/sync"))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    flag = tmp_path / "slow"
    flag.write_text("")
    env = {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}", "SLOW_FLAG": str(flag)}
    previous = f"{deploy_to}/releases/r1"
    abandoned = subprocess.Popen(
        [
            "sh",
            "-c",
            command_line(
                "switch",
                deploy_to,
                target="r2",
                expected="releases/r1",
                mode="deploy",
                previous=previous,
                history="{}",
                fence=TOKEN,
            ),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # as sshd starts every session: its own process group
    )
    deadline = time.monotonic() + 20
    while not Path(f"{flag}.entered").exists():
        assert abandoned.poll() is None and time.monotonic() < deadline, abandoned.communicate()
        time.sleep(0.05)
    # the controller gave up on it; the revert runs (same run, same token) and releases the lock
    revert = command_line("switch", deploy_to, target="r1", expected="releases/r1", mode="revert", fence=TOKEN)
    code, out = run(revert)
    assert code == 0 and out.has("already"), out.error_message()
    assert any("stopping an earlier session" in warning[0] for warning in out.all("warning"))
    assert run(command_line("finish", deploy_to, unlock=TOKEN, fence=TOKEN))[1].has("unlocked")
    abandoned.wait(timeout=30)
    flag.unlink()
    time.sleep(0.2)
    assert os.readlink(Path(deploy_to, "current")) == "releases/r1"
    assert not Path(deploy_to, "releases", "r2", "previousVersion").exists()


def _recorded_session(deploy_to: str) -> str:
    return Path(deploy_to, ".deployer", "lock", "session").read_text()


def test_a_recorded_pid_now_used_by_another_hosts_session_is_left_alone(host):
    """Seen at 1,000 hosts on one kernel: a session recorded under one host's lock had ended and its
    pid went to another host's switch session (waiting for its batch's verdict); the next session
    here killed it as "an earlier session of this run". A session is named by its pid and its start
    time: a pid alone is reused (every host of the test fleet shares one kernel's pids, a real host
    reuses them too)."""
    deploy_to = host
    other = subprocess.Popen(  # another host's session: a deployer script by its command line
        ["sh", "-c", "sleep 30", "deployer-switch"], start_new_session=True
    )
    try:
        pid, start = _recorded_session(deploy_to).split()
        assert pid.isdigit() and start.isdigit()  # what the last session here recorded
        Path(deploy_to, ".deployer", "lock", "session").write_text(f"{other.pid} {start}\n")
        code, out = run(command_line("finish", deploy_to, unlock=TOKEN, fence=TOKEN))
        assert code == 0 and out.has("unlocked"), out.error_message()
        assert not any("stopping an earlier session" in warning[0] for warning in out.all("warning"))
        assert other.poll() is None  # still running
    finally:
        other.kill()
        other.wait()


def test_a_session_records_its_pid_and_its_start_time(host):
    deploy_to = host
    recorder = subprocess.Popen(["sh", "-c", command_line("finish", deploy_to, fence=TOKEN, prune="r2")])
    try:
        os.waitid(os.P_PID, recorder.pid, os.WEXITED | os.WNOWAIT)  # ended, not reaped: its /proc stays
        assert not Path(deploy_to, "releases", "r2").exists()
        pid, start = _recorded_session(deploy_to).split()
        assert int(pid) == recorder.pid  # the session's shell (`exec sh -c`)
        with open(f"/proc/{pid}/stat") as stat_file:  # the kernel's own start time of that process
            assert stat_file.read().rsplit(")", 1)[1].split()[19] == start
    finally:
        recorder.wait()
