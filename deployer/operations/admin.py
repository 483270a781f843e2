"""Tidying commands: unpin, prune, unlock (the lock shown, compare-and-delete), place-signers."""

from __future__ import annotations

from collections.abc import Callable

from deployer import host_signers
from deployer import plan as planning
from deployer.errors import HostError
from deployer.inventory import Inventory
from deployer.invocation import command
from deployer.lock import Finished, read_states, run_finish
from deployer.operations.session import Options, open_fleet, quick_locked
from deployer.phases import (
    finish,
)
from deployer.report import (
    FAILED,
    OK,
    REFUSED,
    UNCHANGED,
    HostResult,
    OperationReport,
    Progress,
)
from deployer.state import HostState


def unpin(inventory: Inventory, options: Options | None = None, progress: Progress | None = None) -> OperationReport:
    """Remove the pin a rollback left, on every host (under the lock)."""
    options = options or Options()
    progress = progress or Progress()
    report = OperationReport("unpin", None)
    with quick_locked(inventory, "unpin", options, progress) as (run, states, unreachable):
        pin = planning.fleet_pin(states)
        failures = finish(run, sorted(states), unpin="1")
        report.hosts = [
            HostResult(
                name,
                FAILED if name in failures else (OK if state.pin else UNCHANGED),
                state.current,
                state.current,
                True,
                0.0,
                failures.get(name, "unpinned" if state.pin else "was not pinned"),
            )
            for name, state in states.items()
        ] + [HostResult(name, FAILED, None, None, False, 0.0, reason) for name, reason in unreachable.items()]
        report.notes.append(f"was {planning.describe_pin(pin)}" if pin else "the fleet was not pinned")
        if unreachable:
            again = command("unpin")
            report.notes.append(f"unreachable hosts keep their pin file; run `{again}` again when they are back")
    return report


def prune(inventory: Inventory, options: Options | None = None, progress: Progress | None = None) -> OperationReport:
    """Remove old releases beyond keep_releases / keep_failed_releases, never a protected one."""
    options = options or Options()
    progress = progress or Progress()
    report = OperationReport("prune", None)
    with quick_locked(inventory, "prune", options, progress) as (run, states, unreachable):
        removal = planning.plan_prune(
            inventory.deploy_to, states, inventory.keep_releases, inventory.keep_failed_releases
        )
        for name in sorted(removal):
            progress.host(
                name, f"{'would remove' if options.dry_run else 'remove'}: {' '.join(removal[name]) or 'nothing'}"
            )
        failures: dict[str, str] = {}
        if options.dry_run:
            report.notes.append("dry run: nothing was changed")
        else:
            failures = finish(run, sorted(states), prune=removal)
        verb = "would remove" if options.dry_run else "removed"
        report.hosts = [
            HostResult(
                name,
                FAILED if name in failures else (UNCHANGED if options.dry_run or not removal[name] else OK),
                state.current,
                state.current,
                not options.dry_run,
                0.0,
                failures.get(name, f"{verb} {len(removal[name])}: {' '.join(removal[name])}".rstrip(": ")),
            )
            for name, state in states.items()
        ] + [HostResult(name, FAILED, None, None, False, 0.0, reason) for name, reason in unreachable.items()]
    return report


def unlock(
    inventory: Inventory,
    confirm: Callable[[str], bool],
    options: Options | None = None,
    progress: Progress | None = None,
) -> OperationReport:
    """Remove the lock shown to the operator (after `confirm` agrees), on every host that has it.

    Compare-and-delete on the token that was shown: a lock taken by a new run while the question
    waited is left alone, and the report says so.
    """
    options = options or Options()
    progress = progress or Progress()
    report = OperationReport("unlock", None)
    with open_fleet(inventory, options) as fleet:
        states, unreachable = read_states(fleet, progress)
        locked = {name: held for name, state in states.items() if (held := state.lock) is not None}
        if not locked:
            report.notes.append("no host is locked")
        else:
            by_lock: dict[str, list[str]] = {}
            for name, held in sorted(locked.items()):
                by_lock.setdefault(held.describe(), []).append(name)
            shown = "; ".join(f"{description} on {', '.join(names)}" for description, names in by_lock.items())
            if not confirm(f"remove the lock ({shown})?"):
                report.refusal = "not confirmed; nothing was changed"
            else:
                options_of = {name: {"unlock": held.token or "-"} for name, held in locked.items()}
                for name, outcome in run_finish(fleet, options_of, "removing the lock"):
                    report.hosts.append(_unlock_result(name, states[name], outcome))
        report.hosts += [HostResult(n, FAILED, None, None, False, 0.0, r) for n, r in sorted(unreachable.items())]
    if any(result.status == REFUSED for result in report.hosts):
        report.notes.append(
            f"a lock changed since it was shown and was left in place: run `{command('unlock')}` again to see it"
        )
    return report


def _unlock_result(name: str, state: HostState, outcome: Finished | HostError) -> HostResult:
    """What removing the shown lock did on one host, from the host's own confirmation records."""
    current = state.current
    if isinstance(outcome, HostError):
        return HostResult(name, FAILED, current, current, False, 0.0, outcome.reason)
    if outcome.lock == "unlocked":
        return HostResult(name, OK, current, current, True, 0.0, "lock removed")
    if outcome.lock == "absent":
        return HostResult(name, UNCHANGED, current, current, True, 0.0, "the lock was already gone")
    if outcome.lock == "changed":
        return HostResult(
            name, REFUSED, current, current, True, 0.0, "left in place: another lock was taken since it was shown"
        )
    reason = "; ".join(outcome.warnings) or "the host did not confirm the removal"
    return HostResult(name, FAILED, current, current, False, 0.0, f"lock not removed: {reason}")


def place_signers(
    inventory: Inventory, options: Options | None = None, progress: Progress | None = None
) -> OperationReport:
    """Make every host's own copy of who may sign (`.deployer/signers/`) the inventory's: after a
    key rotation, a revocation, or to remove it where the inventory has no `signatures` any more.

    Under the lock; a host already holding the inventory's copy is not changed. What each host
    holds afterwards is read back from it (digests), never assumed.
    """
    options = options or Options()
    progress = progress or Progress()
    report = OperationReport("place-signers", None)
    with quick_locked(inventory, "place-signers", options, progress) as (run, states, unreachable):
        copies = host_signers.host_copies(inventory, states)
        wanted: dict[str, dict[str, str]] = {}
        results: dict[str, HostResult] = {}
        for name, state in states.items():
            copy = copies.get(name)
            if copy is not None and state.signers == copy.digests:
                results[name] = _signers_result(name, state, UNCHANGED, "already the inventory's")
            elif copy is None and not state.signers:
                results[name] = _signers_result(name, state, UNCHANGED, "no signatures here, none kept")
            elif copy is None:
                wanted[name] = {"signers": "remove"}
            else:
                wanted[name] = {"signers": "place", **copy.place_options()}
            if name in wanted:
                what = "remove the kept copy" if copy is None else ("replace" if state.signers else "place") + " it"
                progress.host(name, ("would " if options.dry_run else "") + what)
        if options.dry_run:
            report.notes.append("dry run: nothing was changed")
            results.update({name: _signers_result(name, states[name], UNCHANGED, "would change") for name in wanted})
        else:
            fenced = {name: {**asked, "fence": run.lock.token} for name, asked in wanted.items()}
            for name, outcome in run_finish(run.fleet, fenced, "placing the allowed signers"):
                state, copy = states[name], copies.get(name)
                expected = copy.digests if copy is not None else "removed"
                if isinstance(outcome, HostError):
                    results[name] = _signers_result(name, state, FAILED, outcome.reason)
                elif outcome.signers != expected or outcome.warnings:
                    why = "; ".join(outcome.warnings) or f"the host holds {outcome.signers or 'nothing confirmed'}"
                    results[name] = _signers_result(name, state, FAILED, why)
                else:
                    results[name] = _signers_result(name, state, OK, "removed" if copy is None else "placed")
        report.hosts = [results[name] for name in sorted(results)] + [
            HostResult(name, FAILED, None, None, False, 0.0, reason) for name, reason in unreachable.items()
        ]
    return report


def _signers_result(name: str, state: HostState, status: str, message: str) -> HostResult:
    return HostResult(name, status, state.current, state.current, status != UNCHANGED, 0.0, message)
