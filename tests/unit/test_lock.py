"""When a lock is provably stale: same machine and boot, and its process is gone."""

from __future__ import annotations

import json
import os
import subprocess

from deployer.lock import FleetLock, is_stale, process_identity
from deployer.state import LockState


def lock_of(**changes):
    info = json.loads(FleetLock("deploy").info())
    info.update(changes)
    return LockState(False, info, "token")


def test_a_lock_held_by_a_running_process_is_not_stale():
    assert is_stale(lock_of()) is False


def test_a_lock_whose_process_is_gone_is_stale():
    child = subprocess.Popen(["true"])
    child.wait()
    assert is_stale(lock_of(pid=child.pid, **process_identity(os.getpid()) | {"pid_start": "1"})) is True


def test_a_reused_pid_is_not_mistaken_for_the_holder():
    assert is_stale(lock_of(pid_start="12345")) is True  # our pid, but another process start time


def test_another_boot_means_stale():
    assert is_stale(lock_of(boot="00000000-0000-0000-0000-000000000000")) is True


def test_another_machine_cannot_be_judged_even_with_the_same_hostname():
    assert is_stale(lock_of(machine="another-machine")) is None


def test_a_lock_without_details_cannot_be_judged():
    assert is_stale(LockState(False, {}, "")) is None
