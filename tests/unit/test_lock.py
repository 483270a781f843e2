"""When a lock is provably stale: it names this controller's runtime id (a random id made by the
tool in a per-boot tmpfs) and its process is gone. Machine ids, boot ids and hostnames are shared
by clones and containers: they never prove anything on their own."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from deployer import lock as locking
from deployer.lock import FleetLock, is_stale, process_identity, runtime_id
from deployer.state import LockState

REPO = Path(__file__).resolve().parents[2]


def lock_of(**changes):
    info = json.loads(FleetLock("deploy").info())
    info.update(changes)
    return LockState(False, info, "token")


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_lock_held_by_a_running_process_is_not_stale():
    assert is_stale(lock_of()) is False


def test_a_lock_whose_process_is_gone_is_stale():
    assert is_stale(lock_of(pid=dead_pid(), **process_identity(os.getpid()) | {"pid_start": "1"})) is True


def test_a_reused_pid_is_not_mistaken_for_the_holder():
    assert is_stale(lock_of(pid_start="12345")) is True  # our pid, but another process start time


@pytest.mark.parametrize(
    "changes",
    [
        # A clone or a container built from the same image: same machine-id and boot id, another runtime.
        {"runtime": "0" * 32},
        # A lock from before this runtime id existed (older version, or taken before a reboot).
        {"runtime": ""},
        # The runtime id says "here" but the boot id disagrees: the proof is not trusted.
        {"boot": "00000000-0000-0000-0000-000000000000"},
        {"machine": "another-machine"},
        {"pid": "not a number"},
        {"pid": 0},
        # Another PID namespace sharing our /dev/shm (so our runtime id), or a lock that does not say.
        {"pid_namespace": "pid:[1]"},
        {"pid_namespace": None},
    ],
    ids=[
        "clone-same-machine-id",
        "no-runtime-id",
        "boot-disagrees",
        "machine-disagrees",
        "bad-pid",
        "pid-zero",
        "other-pid-namespace",
        "no-pid-namespace",
    ],
)
def test_locks_that_cannot_be_judged_are_never_stale(changes):
    # The holder's process is gone in every case: only the proof is missing.
    assert is_stale(lock_of(**{"pid": dead_pid(), **changes})) is None


def test_a_lock_without_details_cannot_be_judged():
    assert is_stale(LockState(False, {}, "")) is None


def test_runtime_id_is_made_once_private_and_stable(tmp_path, monkeypatch):
    monkeypatch.setattr(locking, "RUNTIME_FOLDERS", (str(tmp_path),))
    first = runtime_id()
    assert len(first) == 32 and runtime_id() == first
    (made,) = tmp_path.iterdir()
    assert stat.S_IMODE(made.stat().st_mode) == 0o600


def test_a_runtime_id_file_others_can_write_proves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(locking, "RUNTIME_FOLDERS", (str(tmp_path),))
    path = tmp_path / f"deployer-runtime-{os.getuid()}.id"
    path.write_text("a" * 32 + "\n")
    path.chmod(0o666)
    assert runtime_id() == ""
    assert is_stale(lock_of(pid=dead_pid(), runtime="")) is None


def test_without_a_runtime_folder_no_lock_is_ever_stale(tmp_path, monkeypatch):
    monkeypatch.setattr(locking, "RUNTIME_FOLDERS", (str(tmp_path / "missing"),))
    assert is_stale(lock_of(pid=dead_pid())) is None


def test_a_live_holder_in_another_pid_namespace_sharing_dev_shm_is_not_judged_dead():
    """Two containers with `--ipc=host` (one /dev/shm, so one runtime id) and their own PID
    namespaces: the holder's pid means another process here, or none. Before, its lock was judged
    stale and deleted while it ran; now its PID namespace is part of the proof."""
    holder = subprocess.Popen(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            sys.executable,
            "-c",
            "from deployer.lock import FleetLock; import sys, time; print(FleetLock('deploy').info(), flush=True); "
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        info = json.loads(holder.stdout.readline())
        assert info["runtime"] == runtime_id() and info["pid"] < 10  # our runtime id, its own pid count
        assert info["pid_namespace"] != process_identity(os.getpid())["pid_namespace"]
        assert holder.poll() is None  # the holder is alive
        assert is_stale(LockState(False, info, "token")) is None
    finally:
        holder.communicate("")
