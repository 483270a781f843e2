"""The fleet lock: one `mkdir` per host (atomic), taken as part of reading state.

Taking it never checks first and writes later: `mkdir` either creates the lock folder or fails
because it exists. The fleet-wide protocol makes two operations started at the same moment end
with exactly one holding the whole fleet:

1. connect to every host (in parallel);
2. take the lock on the first reachable host in inventory order (the "lead"): whoever gets it
   goes on, the other is refused (or waits with --lock-wait) at once;
3. take it on the other hosts in parallel; if any is held by someone else (an operation with a
   different lead, e.g. another inventory), release ours everywhere and refuse.

The lock folder holds our random token and who/when/what/why as JSON; it is removed only by
the run holding that token, or by `inv unlock` after confirmation.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from deployer.errors import HostError, PlanRefused, StepFailed
from deployer.fleet import Fleet, HostConnection
from deployer.inventory import Inventory
from deployer.report import Progress
from deployer.scripts import ScriptOutput, command_line, parse_output
from deployer.state import HostState, LockState, parse_state

Unreachable = dict[str, str]


class LockHeld(PlanRefused):
    """Another operation holds the fleet lock."""


def local_user() -> str:
    """Who runs the tool: $DEPLOYER_USER (for CI bots acting for someone), else the login name."""
    for name in ("DEPLOYER_USER", "USER", "LOGNAME"):
        if os.environ.get(name):
            return os.environ[name]
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FleetLock:
    """This run's lock request, and the hosts on which we hold the lock right now."""

    operation: str
    message: str = ""
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    held: set[str] = field(default_factory=set)

    def info(self) -> str:
        return json.dumps(
            {
                "operation": self.operation,
                "user": local_user(),
                "controller": socket.gethostname(),
                "pid": os.getpid(),
                "time": utc_now(),
                "message": self.message,
                **process_identity(os.getpid()),
            },
            sort_keys=True,
        )


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def process_identity(pid: int) -> dict[str, str]:
    """What identifies a process beyond its pid: this machine, this boot, the process's start time."""
    stat = _read(f"/proc/{pid}/stat")
    start = stat.rsplit(")", 1)[-1].split()[19] if stat else ""
    return {"machine": _read("/etc/machine-id"), "boot": _read("/proc/sys/kernel/random/boot_id"), "pid_start": start}


def _gather_commands(inventory: Inventory, lock: FleetLock | None, history: int = 0) -> dict[str, str]:
    """The gather command line for each deploy_to of the inventory (one lock info for all)."""
    folders = {inventory.deploy_to_of(host) for host in inventory.hosts}
    if lock is None:
        return {folder: command_line("gather", folder, history=history or None) for folder in folders}
    info = lock.info()
    return {
        folder: command_line(
            "gather", folder, lock="take", lock_token=lock.token, lock_info=info, history=history or None
        )
        for folder in folders
    }


def read_states(
    fleet: Fleet,
    progress: Progress,
    hosts: Iterable[str] | None = None,
    lock: FleetLock | None = None,
    history: int = 0,
) -> tuple[dict[str, HostState], Unreachable]:
    """One `gather` session per host (taking the lock there when `lock` is given)."""
    commands = _gather_commands(fleet.inventory, lock, history)

    def work(connection: HostConnection) -> HostState:
        deploy_to = fleet.inventory.deploy_to_of(connection.host)
        result = connection.run(commands[deploy_to])
        output = parse_output(result.output)
        if result.exit_status != 0:
            raise StepFailed(connection.host.name, "reading state", result.exit_status, output.error_message())
        return parse_state(connection.host.name, output, deploy_to)

    targets = None if hosts is None else [fleet.inventory.host(name) for name in hosts]
    states: dict[str, HostState] = {}
    unreachable: Unreachable = {}
    for host, outcome in fleet.map(work, targets):
        if isinstance(outcome, HostError):
            unreachable[host.name] = outcome.reason
            progress.host(host.name, f"FAILED: {outcome.reason}")
            continue
        states[host.name] = outcome
        if lock is not None and outcome.lock is not None and outcome.lock.taken_by_us:
            lock.held.add(host.name)
        for note in outcome.notes:
            progress.host(host.name, f"warning: {note}")
    return states, unreachable


def _held_by_others(states: dict[str, HostState]) -> dict[str, LockState]:
    return {name: state.lock for name, state in states.items() if state.lock is not None and not state.lock.taken_by_us}


def _refusal(others: dict[str, LockState], waited: float) -> str:
    name, lock_state = sorted(others.items())[0]
    more = f" (and on {len(others) - 1} more host(s))" if len(others) > 1 else ""
    text = f"the fleet is locked by {lock_state.describe()}, on {name}{more}"
    if waited:
        text += f"; still held after waiting {waited:g}s"
    return text + "; if that run is gone, see `inv lock-status` and `inv unlock`"


def acquire(
    fleet: Fleet, lock: FleetLock, progress: Progress, wait: float = 0.0
) -> tuple[dict[str, HostState], Unreachable]:
    """Take the fleet lock and read every host's state (see the module docstring for the protocol)."""
    deadline = time.monotonic() + wait
    unreachable: Unreachable = {}
    connecting = fleet.connect_all()
    # The lead is the first host in inventory order that answers; its lock is taken while the
    # other connections are still being opened.
    lead = None
    for name, future in connecting.items():
        outcome = future.result()
        if isinstance(outcome, HostError):
            unreachable[name] = outcome.reason
            progress.host(name, f"FAILED: {outcome.reason}")
        else:
            lead = name
            break
    if lead is None:
        return {}, unreachable
    states, lost = read_states(fleet, progress, [lead], lock)
    for name, future in connecting.items():
        outcome = future.result()
        if isinstance(outcome, HostError) and name not in unreachable:
            unreachable[name] = outcome.reason
            progress.host(name, f"FAILED: {outcome.reason}")
    names = [host.name for host in fleet.inventory.hosts]
    rest = [name for name in names[names.index(lead) + 1 :] if name not in unreachable]
    return _acquire_lead(fleet, lock, progress, lead, rest, unreachable, deadline, wait, states, lost)


def _acquire_lead(
    fleet: Fleet,
    lock: FleetLock,
    progress: Progress,
    lead: str,
    rest: list[str],
    unreachable: Unreachable,
    deadline: float,
    wait: float,
    states: dict[str, HostState],
    lost: Unreachable,
) -> tuple[dict[str, HostState], Unreachable]:
    cleared = False
    while True:
        if lead in lost:
            unreachable.update(lost)
            return _acquire_rest(fleet, lock, progress, rest, unreachable, deadline, wait)
        others = _held_by_others(states)
        if not others:
            return _acquire_rest(fleet, lock, progress, rest, unreachable, deadline, wait, states)
        if not cleared and _clear_stale(fleet, others, progress):
            cleared = True  # once: a lock that does not go away is not retried forever
            states, lost = read_states(fleet, progress, [lead], lock)
            continue
        if time.monotonic() >= deadline:
            raise LockHeld(_refusal(others, wait))
        time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        states, lost = read_states(fleet, progress, [lead], lock)


def _acquire_rest(
    fleet: Fleet,
    lock: FleetLock,
    progress: Progress,
    rest: list[str],
    unreachable: Unreachable,
    deadline: float,
    wait: float,
    states: dict[str, HostState] | None = None,
) -> tuple[dict[str, HostState], Unreachable]:
    states = dict(states or {})
    if rest:
        more, lost = read_states(fleet, progress, rest, lock)
        states.update(more)
        unreachable.update(lost)
    others = _held_by_others(states)
    if others and _clear_stale(fleet, others, progress):
        return acquire(fleet, lock, progress, max(0.0, deadline - time.monotonic()))
    if others:
        release(fleet, lock, progress)
        if time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
            return acquire(fleet, lock, progress, deadline - time.monotonic())
        raise LockHeld(_refusal(others, wait))
    return states, unreachable


def _clear_stale(fleet: Fleet, others: dict[str, LockState], progress: Progress) -> bool:
    """Remove locks whose run provably no longer exists (each only if it is still that same lock).

    Returns True when every lock in the way was such a lock and is gone, so taking it can be retried.
    """
    if not all(is_stale(lock_state) for lock_state in others.values()):
        return False
    for name, lock_state in sorted(others.items()):
        progress.host(name, f"warning: removing a stale lock ({lock_state.describe()}: that process is gone)")
    options_of = {name: {"unlock": lock_state.token or "-"} for name, lock_state in others.items()}
    outcomes = run_finish(fleet, options_of, "removing a stale lock")
    return not any(isinstance(outcome, HostError) for _name, outcome in outcomes)


def run_finish(
    fleet: Fleet, options_of: Mapping[str, Mapping[str, Any]], step: str
) -> Iterator[tuple[str, ScriptOutput | HostError]]:
    """One `finish` session on each named host with its own options (unlock token, pin, marks, prune).

    The one place a lock-releasing `finish` is run: releasing our lock, clearing a stale one, and
    the end of an operation (`phases.finish`). Yields (host, parsed output) or (host, the error).
    """

    def work(connection: HostConnection) -> ScriptOutput:
        name = connection.host.name
        deploy_to = fleet.inventory.deploy_to_of(connection.host)
        result = connection.run(command_line("finish", deploy_to, **options_of[name]))
        output = parse_output(result.output)
        if result.exit_status != 0:
            raise StepFailed(name, step, result.exit_status, output.error_message())
        return output

    for host, outcome in fleet.map(work, [fleet.inventory.host(name) for name in sorted(options_of)]):
        yield host.name, outcome


def release(fleet: Fleet, lock: FleetLock, progress: Progress, **finish: Any) -> dict[str, HostError]:
    """Release our lock on every host where we still hold it (one `finish` session each)."""
    failures: dict[str, HostError] = {}
    options_of = {name: {"unlock": lock.token, **finish} for name in lock.held}
    for name, outcome in run_finish(fleet, options_of, "releasing the lock"):
        if isinstance(outcome, HostError):
            failures[name] = outcome
            progress.host(name, f"warning: lock not released: {outcome.reason}")
        else:
            lock.held.discard(name)
    return failures


def is_stale(lock_state: LockState) -> bool | None:
    """True when the run that took the lock provably no longer exists; None when that cannot be known.

    Provable only for locks taken on this machine (same machine id): the machine rebooted since,
    or no process with that pid and start time runs. Hostnames alone prove nothing (CI runners
    often share one).
    """
    info = lock_state.info
    pid = info.get("pid") if info else None
    if not info or not info.get("machine") or not isinstance(pid, int) or pid <= 0:
        return None
    here = process_identity(os.getpid())
    if info.get("machine") != here["machine"]:
        return None
    if info.get("boot") != here["boot"]:
        return True
    running = process_identity(pid)["pid_start"]
    return not running or running != info.get("pid_start")
