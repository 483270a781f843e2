"""`deployer watch`: watch a fleet that is already live with the inventory's checks, under the lock
(no deploy starts meanwhile), and roll it back by itself, as `deployer rollback` does, when the
watch fails (or cannot decide and `on_error` says rollback)."""

from __future__ import annotations

import dataclasses
import time

from deployer.errors import InputError
from deployer.inventory import Inventory
from deployer.invocation import command
from deployer.operations.rollback import run_rollback
from deployer.operations.session import Options, finished, locked_run
from deployer.phases.watch import CUT, check_queries
from deployer.phases.watch import watch as watch_phase
from deployer.plan.watch import FAILED, PASSED, UNDECIDED
from deployer.report import UNCHANGED, HostResult, OperationReport, Phase, Progress


def watch_fleet(
    inventory: Inventory, options: Options | None = None, progress: Progress | None = None, duration: int | None = None
) -> OperationReport:
    """Watch the live release for the inventory's `watch.duration` (or `duration` seconds)."""
    options = options or Options()
    progress = progress or Progress()
    if inventory.watch is None:
        raise InputError(
            f"{inventory.path}: no `watch` section: say what to watch there (docs/watch.md), then `{command('watch')}`"
        )
    watch = inventory.watch
    if duration is not None:
        watch = dataclasses.replace(watch, duration=float(duration), interval=min(watch.interval, float(duration)))
    check_queries(watch, progress, inventory.path)  # a malformed query: refused before anything is contacted
    with locked_run(inventory, "watch", options, progress) as (run, states, unreachable, gathered):
        live = {state.current for state in states.values()}
        release = next(iter(live)) if len(live) == 1 else None
        report = OperationReport("watch", release, revision=run.revision_of(release).as_dict())
        report.phases.append(gathered)
        if unreachable or release is None:
            where = ", ".join(f"{name}: {state.current or 'none'}" for name, state in sorted(states.items()))
            why = f"unreachable: {', '.join(sorted(unreachable))}" if unreachable else f"the fleet is split ({where})"
            report.refusal = f"cannot watch one live release: {why}; `{command('status')}` shows each host"
            return finished(report, run)
        hosts = sorted(states)
        started = time.monotonic()
        outcome = watch_phase(watch, "the fleet", release, hosts, progress, report, run)
        report.phases.append(Phase("watch", time.monotonic() - started, outcome.verdict == PASSED, outcome.reason))
        rolls_back = outcome.verdict == FAILED or (outcome.verdict == UNDECIDED and watch.on_error == "rollback")
        if not rolls_back:
            said = f"watched: {outcome.verdict}"
            report.hosts = [HostResult(name, UNCHANGED, release, release, True, 0.0, said) for name in hosts]
            back = f"`{command('rollback')}` puts the fleet back on its previous release"
            if outcome.verdict == CUT:
                report.cut_short = f"{outcome.reason}; nothing was rolled back; {back}"
            elif outcome.verdict == UNDECIDED:
                report.problems.append(f"{outcome.reason}; on_error: hold: nothing was rolled back; {back}")
            return finished(report, run)
        why = outcome.reason + ("; on_error: rollback" if outcome.verdict == UNDECIDED else "")
        progress.say(f"rolling the fleet back: {why}")
        rolled = run_rollback(run, None, states, unreachable, dataclasses.replace(options, message=f"watch: {why}"))
        report.hosts = rolled.hosts
        report.phases += rolled.phases
        report.plan = rolled.plan
        report.notes += rolled.notes
        report.refusal = rolled.refusal and f"the watch failed ({why}) but the rollback was refused: {rolled.refusal}"
        report.problems += rolled.problems + [f"{why}: rolled back from {release} to {rolled.target}"]
        report.reverted_to_start = False
    return finished(report, run)
