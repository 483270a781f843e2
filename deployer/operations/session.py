"""One operation's run: the fleet opened once, the lock taken while reading state, and released on
every way out (success, failure, Ctrl-C: running steps settle first, then the lock goes by token)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from deployer.errors import Interrupted
from deployer.fleet import Fleet
from deployer.inventory import Inventory
from deployer.invocation import command
from deployer.lock import FleetLock, acquire, read_states, release
from deployer.phases import (
    Run,
)
from deployer.release import PreparedArtifact
from deployer.report import (
    OperationReport,
    Phase,
    Progress,
    set_secrets,
)
from deployer.revision import Revision
from deployer.state import HostState

Unreachable = dict[str, str]


@dataclass(frozen=True)
class Options:
    accept_new_host_keys: bool = False
    parallel: int | None = None
    dry_run: bool = False
    force: bool = False  # deploy: converge a split fleet / ignore the schema check; rollback: ignore the schema check
    unpin: bool = False  # deploy: remove the pin a rollback left
    lock_wait: float = 0.0  # seconds to wait for another operation's lock
    message: str = ""  # why: recorded in the lock, the history, the pin and bad marks
    hosts: tuple[str, ...] = ()  # --hosts: only these hosts of the inventory
    groups: tuple[str, ...] = ()  # --group: only members of these groups
    revision: Revision = Revision()  # deploy/drill: --version and --commit (checked), first of the sources
    signature: str | None = None  # deploy/drill: --signature FILE (default: the artifact's .sig beside it)
    pull: str = ""  # deploy/drill: --pull URL, hosts fetch the artifact from there (a pull deploy)
    sha256: str = ""  # deploy/drill: --sha256 HEX, the digest of an artifact given as a URL
    no_watch: bool = False  # deploy/drill: --no-watch, skip the inventory's watch after the switch


def prepared_artifact(inventory: Inventory, source: str, options: Options) -> PreparedArtifact:
    """The artifact of a deploy or drill, checked as the options and the inventory's signatures say."""
    return PreparedArtifact(
        source,
        options.revision,
        inventory.signature_settings(),
        options.signature,
        options.pull,
        options.sha256,
    )


# Exec sessions per host an operation runs when all goes well (deploy's and rollback's are the
# budgets the tests assert): the fleet asks for each next session's channel while the current one
# runs, up to this many (deployer.connection, HostConnection.sessions_expected).
SESSIONS_EXPECTED = {"deploy": 3, "rollback": 2, "rollback-drill": 9, "unpin": 2, "prune": 2, "place-signers": 2}


def open_fleet(inventory: Inventory, options: Options, progress: Progress | None = None, operation: str = "") -> Fleet:
    set_secrets(inventory.secrets())
    return Fleet(
        inventory,
        accept_new_host_keys=options.accept_new_host_keys,
        parallel=options.parallel,
        observer=progress.observe if progress is not None else None,
        sessions_expected=SESSIONS_EXPECTED.get(operation, 1),
    )


@contextmanager
def locked_run(
    inventory: Inventory, operation: str, options: Options, progress: Progress
) -> Iterator[tuple[Run, dict[str, HostState], Unreachable, Phase]]:
    """Open the fleet, take the lock while reading state; release whatever is still held on the way out."""
    with open_fleet(inventory, options, progress, operation) as fleet:
        lock = FleetLock(operation, options.message, pull=bool(options.pull or options.sha256))
        run = Run(fleet, lock, progress, options.message)
        started = time.monotonic()
        progress.say(f"{operation}: locking and reading state of {len(inventory.hosts)} host(s)")
        try:
            states, unreachable = acquire(fleet, lock, progress, options.lock_wait)
            run.learn_revisions(states)
            yield run, states, unreachable, Phase("gather", time.monotonic() - started, not unreachable)
        except KeyboardInterrupt:
            with shielded_from_ctrl_c(progress):
                cut = interrupted(fleet, lock, progress, operation, run.run_id)
            raise cut from None
        finally:
            if lock.held:
                with shielded_from_ctrl_c(progress):  # a Ctrl-C now must not leave the lock behind
                    release(fleet, lock, progress)


@contextmanager
def shielded_from_ctrl_c(progress: Progress) -> Iterator[None]:
    """Clean-up after a Ctrl-C runs to its end: a further Ctrl-C is noted, not obeyed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        yield
        return

    def noted(_signum: int, _frame: object) -> None:
        progress.say("still releasing the lock; one moment")

    signal.signal(signal.SIGINT, noted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def interrupted(fleet: Fleet, lock: FleetLock, progress: Progress, operation: str, run_id: str) -> Interrupted:
    """After Ctrl-C: let the steps already running on hosts end (uploads stop at once), release our
    lock wherever it may have been taken (every connected host, compare-and-delete on our token,
    so a lock taken while the answer was in flight is released too), then read where each host is
    and what this run recorded there: the truth the operator and the exit status get."""
    progress.interrupted()
    progress.say("interrupted: waiting for running steps, releasing the lock, then reading where each host is")
    fleet.settle()
    release(fleet, lock, progress, hosts=set(fleet.connected()) | lock.held)
    states, unreachable = read_states(fleet, progress, history=HISTORY_READ_BACK)
    hosts: list[dict[str, object]] = []
    for name in sorted(states):
        state = states[name]
        record = next((entry for entry in reversed(state.history) if entry.get("run") == run_id), None)
        release_info = state.releases.get(state.current or "")
        version = release_info.version if release_info is not None else ""
        current = (state.current or state.current_problem or "none") + (f" [{version}]" if version else "")
        done = f"; this run: {record.get('op')} {record.get('result')}" if record else "; this run changed nothing here"
        progress.say(f"  {name}: current -> {current}{done}")
        hosts.append({"host": name, "current": state.current, "version": version or None, "this_run": record})
    for name, reason in sorted(unreachable.items()):
        progress.say(f"  {name}: unknown: {reason}")
        hosts.append({"host": name, "current": None, "unreachable": reason, "this_run": None})
    switched = [entry for entry in hosts if entry["this_run"] is not None]
    complete = (
        bool(hosts)
        and not unreachable
        and all(
            isinstance(entry["this_run"], dict)
            and entry["this_run"].get("result") == "ok"
            and entry["this_run"].get("to") == entry["current"]
            and entry["this_run"].get("op") == operation
            for entry in hosts
        )
    )
    if complete:
        target = hosts[0]["current"]
        left = "cut short: pruning old releases" if operation == "deploy" else "nothing was left to do"
        message = (
            f"{operation}: interrupted after every host switched and passed its checks: {len(hosts)}/{len(hosts)} "
            f"host(s) on {target} (read back from each host); {left}"
        )
    else:
        message = (
            f"interrupted: {operation} cut short; {len(switched)}/{len(hosts)} host(s) recorded a switch by this run "
            f"(each host's state is above; `{command('status')}` shows it again)"
        )
    return Interrupted(message, hosts, complete)


HISTORY_READ_BACK = 5  # records read back per host after Ctrl-C: this run's own are the newest


def finished(report: OperationReport, run: Run) -> OperationReport:
    """The report of an operation that ran: how many connections and sessions it used (budgets the
    tests assert) and its timeline (what each host did, when)."""
    report.connections = run.fleet.connections_opened
    report.sessions = run.fleet.sessions_by_host()
    report.timeline = run.progress.timeline.data()
    return report


@contextmanager
def quick_locked(
    inventory: Inventory, operation: str, options: Options, progress: Progress
) -> Iterator[tuple[Run, dict[str, HostState], Unreachable]]:
    with locked_run(inventory, operation, options, progress) as (run, states, unreachable, _gathered):
        yield run, states, unreachable
