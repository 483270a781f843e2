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
the run holding that token, or by `inv unlock` after confirmation, and always by compare-and-delete
on the token (a lock taken by someone else in the meantime is never removed).

A lock is cleared automatically only with a proof that cannot collide: the lock names this
controller's runtime id (a random id the tool creates in a per-boot tmpfs, see `runtime_id`), and
no process with the recorded pid and start time runs here. `/etc/machine-id`, the kernel's boot
id and hostnames are shared by cloned VMs and containers built from one image: they are recorded
for people to read, and never enough on their own.
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

from deployer.connection import HostConnection
from deployer.errors import HostError, LockHeld, StepFailed
from deployer.fleet import Fleet
from deployer.invocation import command
from deployer.protocol import ProtocolError, ScriptOutput
from deployer.report import Progress
from deployer.scripts import run_script
from deployer.state import HostState, LockState, parse_state

Unreachable = dict[str, str]


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
    pull: bool = False  # the operation has hosts fetch the artifact: reading state checks for curl or wget

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


RUNTIME_FOLDERS = ("/dev/shm", "/run/user/{uid}")  # tmpfs: empty after every boot, per container


def runtime_id() -> str:
    """A random id for this controller's current boot and runtime, made by the tool; "" when none can be.

    Kept in a tmpfs (emptied at boot; each container and each cloned VM has its own), created
    once with a link (atomic), owned by us and private. Two machines never share one, whatever
    their machine-id or boot id; so a lock that names ours was taken here, in this boot.
    """
    uid = os.getuid()
    for folder in RUNTIME_FOLDERS:
        folder = folder.format(uid=uid)
        if not os.path.isdir(folder):
            continue
        path = os.path.join(folder, f"deployer-runtime-{uid}.id")
        try:
            if not os.path.lexists(path):
                temp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
                descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(secrets.token_hex(16) + "\n")
                try:
                    os.link(temp, path)
                except FileExistsError:
                    pass  # another run made it first: use theirs
                finally:
                    os.unlink(temp)
            status = os.lstat(path)
            if status.st_uid != uid or status.st_mode & 0o077 or not os.path.isfile(path):
                continue  # not ours alone: proves nothing
            value = _read(path)
        except OSError:
            continue
        if len(value) == 32 and all(ch in "0123456789abcdef" for ch in value):
            return value
    return ""


def process_identity(pid: int) -> dict[str, str]:
    """What identifies a process beyond its pid: this controller's runtime id, the process's start time,
    and (for people reading the lock) the machine and boot ids."""
    stat = _read(f"/proc/{pid}/stat")
    start = stat.rsplit(")", 1)[-1].split()[19] if stat else ""
    return {
        "runtime": runtime_id(),
        "machine": _read("/etc/machine-id"),
        "boot": _read("/proc/sys/kernel/random/boot_id"),
        "pid_start": start,
        "pid_namespace": _pid_namespace(),
    }


def _pid_namespace() -> str:
    """This process's PID namespace ("pid:[4026531836]"): pids mean something only inside it, and
    containers sharing one /dev/shm (so one runtime id) can each have their own."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


MAX_HISTORY_LINES = 10000


def _gather_options(lock: FleetLock | None, history: int = 0) -> dict[str, Any]:
    """The gather options (one lock info for all hosts)."""
    options: dict[str, Any] = {"history": str(min(max(0, history), MAX_HISTORY_LINES)) if history else ""}
    if lock is not None:
        options.update(lock="take", lock_token=lock.token, lock_info=lock.info(), pull="1" if lock.pull else "")
    return options


def read_states(
    fleet: Fleet,
    progress: Progress,
    hosts: Iterable[str] | None = None,
    lock: FleetLock | None = None,
    history: int = 0,
) -> tuple[dict[str, HostState], Unreachable]:
    """One `gather` session per host (taking the lock there when `lock` is given)."""
    options = _gather_options(lock, history)

    def work(connection: HostConnection) -> HostState:
        deploy_to = fleet.inventory.deploy_to_of(connection.host)
        signing = "1" if fleet.inventory.signatures_of(connection.host) is not None else ""
        result = run_script(connection, "gather", deploy_to, **options, signing=signing)
        output = result.output
        if result.exit_status != 0:
            raise StepFailed(connection.host.name, "reading state", result.exit_status, output.error_message())
        if not output.has("deploy_to"):
            raise ProtocolError(connection.host.name, "reading state", "no deploy_to record")
        return parse_state(connection.host.name, output, deploy_to)

    targets = None if hosts is None else [fleet.inventory.host(name) for name in hosts]
    states: dict[str, HostState] = {}
    unreachable: Unreachable = {}
    for host, outcome in fleet.map(work, targets):
        if isinstance(outcome, HostError):
            unreachable[host.name] = outcome.reason
            progress.host(host.name, f"FAILED: {outcome.reason}")
            continue
        if lock is not None and outcome.lock is not None and outcome.lock.taken_by_us:
            lock.held.add(host.name)
        if lock is not None and outcome.lacks_tools():
            # Nothing is changed on a host that could not finish: it counts as failed (its lock,
            # if taken, is released with the others).
            unreachable[host.name] = outcome.lacks_tools()
            progress.host(host.name, f"FAILED: {outcome.lacks_tools()}")
            continue
        states[host.name] = outcome
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
    return text + f"; if that run is gone, see `{command('lock-status')}` and `{command('unlock')}`"


def acquire(
    fleet: Fleet, lock: FleetLock, progress: Progress, wait: float = 0.0
) -> tuple[dict[str, HostState], Unreachable]:
    """Take the fleet lock and read every host's state (see the module docstring for the protocol).

    With `wait`, a held lock is tried again (a loop, about once a second) until `wait` seconds passed.
    """
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
    cleared: set[str] = set()  # hosts whose stale lock was removed: once each, never again and again
    while True:
        if lead in lost:
            unreachable.update(lost)
            lead_states: dict[str, HostState] = {}
        else:
            lead_states = states
        others = _held_by_others(lead_states)
        if not others:
            more, lost_rest = read_states(fleet, progress, rest, lock) if rest else ({}, {})
            others = _held_by_others(more)
            if not others:
                unreachable.update(lost_rest)
                return {**lead_states, **more}, unreachable
            release(fleet, lock, progress)  # someone else holds part of the fleet: give ours back
        if not cleared & set(others) and _clear_stale(fleet, others, progress):
            cleared |= set(others)
        elif time.monotonic() >= deadline:
            raise LockHeld(_refusal(others, wait))
        else:
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        states, lost = read_states(fleet, progress, [lead], lock)


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
    return all(not isinstance(outcome, HostError) and outcome.lock == "unlocked" for _name, outcome in outcomes)


@dataclass(frozen=True)
class Finished:
    """What one host confirmed a `finish` did (from its records, never from the exit status)."""

    lock: (
        str  # "unlocked" | "absent" (no lock there) | "changed" (another's lock, left alone) | "" (not asked/confirmed)
    )
    pin: str  # "unpinned" | "not_pinned" | "pinned" | ""
    marked_bad: bool
    pruned: tuple[str, ...]
    warnings: tuple[str, ...]
    signers: str = ""  # the host's copy of who may sign after placing it (digests), "removed", or ""

    @property
    def lock_settled(self) -> bool:
        """Our lock is no longer there (removed now, already gone, or another's stands in its place)."""
        return self.lock in ("unlocked", "absent", "changed")

    @classmethod
    def parse(cls, output: ScriptOutput) -> Finished:
        lock = next((name for key, name in _LOCK_RECORDS.items() if output.has(key)), "")
        pin = next((key for key in ("unpinned", "not_pinned", "pinned") if output.has(key)), "")
        return cls(
            lock,
            pin,
            output.has("marked_bad"),
            tuple(fields[0] for fields in output.all("pruned")),
            tuple(output.warnings()),
            "removed" if output.has("signers_removed") else (output.first("signers") or [""])[0],
        )


_LOCK_RECORDS = {"unlocked": "unlocked", "lock_absent": "absent", "lock_changed": "changed"}


def run_finish(
    fleet: Fleet, options_of: Mapping[str, Mapping[str, Any]], step: str
) -> Iterator[tuple[str, Finished | HostError]]:
    """One `finish` session on each named host with its own options (unlock token, pin, marks, prune).

    The one place a `finish` is run: releasing our lock, clearing a stale one, unlock, and the end
    of an operation (`phases.finish`). Yields (host, what it confirmed) or (host, the error).
    """

    def work(connection: HostConnection) -> Finished:
        name = connection.host.name
        deploy_to = fleet.inventory.deploy_to_of(connection.host)
        result = run_script(connection, "finish", deploy_to, **options_of[name])
        output = result.output
        if result.exit_status != 0:
            raise StepFailed(name, step, result.exit_status, output.error_message())
        if not output.has("finished") and not output.has("deploy_to"):
            raise ProtocolError(name, step, "no finished record")
        return Finished.parse(output)

    for host, outcome in fleet.map(work, [fleet.inventory.host(name) for name in sorted(options_of)]):
        yield host.name, outcome


def release(
    fleet: Fleet, lock: FleetLock, progress: Progress, hosts: Iterable[str] | None = None
) -> dict[str, HostError]:
    """Release our lock on every host where we hold it, or on `hosts` (compare-and-delete on our token).

    A host counts as released only when it confirms (@unlocked, or no lock / another's lock there).
    """
    failures: dict[str, HostError] = {}
    names = sorted(lock.held if hosts is None else set(hosts))
    options_of = {name: {"unlock": lock.token, "fence": lock.token} for name in names}
    for name, outcome in run_finish(fleet, options_of, "releasing the lock"):
        if isinstance(outcome, HostError):
            failures[name] = outcome
            progress.host(name, f"warning: lock not released: {outcome.reason}")
        elif outcome.lock_settled:
            lock.held.discard(name)
        else:
            reason = "; ".join(outcome.warnings) or "the host did not confirm"
            failures[name] = HostError(name, f"lock not released: {reason}")
            progress.host(name, f"warning: lock not released: {reason}")
    return failures


def is_stale(lock_state: LockState) -> bool | None:
    """True when the run that took the lock provably no longer exists; None when that cannot be known.

    Provable only for locks that name this controller's runtime id (this machine, this boot: see
    `runtime_id`) and this PID namespace, and whose process (pid and start time) no longer runs. Anything else, a lock
    from before a reboot included, cannot be judged from here: `inv unlock` is the way. The
    machine id, the boot id and hostnames prove nothing on their own (clones and containers share them).
    """
    info = lock_state.info
    pid = info.get("pid") if info else None
    here = runtime_id()
    if not info or not here or info.get("runtime") != here or not isinstance(pid, int) or pid <= 0:
        return None
    identity = process_identity(os.getpid())
    if info.get("machine") != identity["machine"] or info.get("boot") != identity["boot"]:
        return None  # the runtime id says "here": anything else disagreeing means it cannot be trusted
    if not identity["pid_namespace"] or info.get("pid_namespace") != identity["pid_namespace"]:
        return None  # its pid counts in another PID namespace (or an older lock does not say which)
    running = process_identity(pid)["pid_start"]
    return not running or running != info.get("pid_start")
