"""The operations: deploy, rollback, rollback drill, and the commands that read or tidy fleet state.

Each follows the same flow over one `Fleet` (one connection per host for the whole operation):
take the lock while reading state (`deployer.lock`) -> plan (pure, `deployer.plan`) -> show ->
act (`deployer.phases`: stage, switch, finish) -> verify (from what the switch read back) ->
report. The lock is released on success, on failure and on Ctrl-C (a `finally` below); only a
killed process leaves it, and `inv lock-status` shows such a lock as stale.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from deployer import plan as planning
from deployer.errors import HostError, PlanRefused
from deployer.fleet import Fleet
from deployer.inventory import Inventory
from deployer.lock import FleetLock, acquire, is_stale, read_states, release, run_finish
from deployer.phases import (
    Run,
    Switched,
    SwitchRequest,
    finish,
    mark_info,
    pin_info,
    run_local_hook,
    run_once,
    stage,
    switch,
)
from deployer.plan import HostPlan, Plan
from deployer.protocol import ScriptOutput
from deployer.release import Artifact, PreparedArtifact, check_release_id
from deployer.report import (
    FAILED,
    OK,
    REFUSED,
    REVERTED,
    SKIPPED,
    UNCHANGED,
    HostResult,
    OperationReport,
    Phase,
    Progress,
    set_secrets,
)
from deployer.state import HostState, LockState

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


def _open_fleet(inventory: Inventory, options: Options, progress: Progress | None = None) -> Fleet:
    set_secrets(inventory.secrets())
    return Fleet(
        inventory,
        accept_new_host_keys=options.accept_new_host_keys,
        parallel=options.parallel,
        observer=progress.observe if progress is not None else None,
    )


@contextmanager
def _locked_run(
    inventory: Inventory, operation: str, options: Options, progress: Progress
) -> Iterator[tuple[Run, dict[str, HostState], Unreachable, Phase]]:
    """Open the fleet, take the lock while reading state; release whatever is still held on the way out."""
    with _open_fleet(inventory, options, progress) as fleet:
        lock = FleetLock(operation, options.message)
        run = Run(fleet, lock, progress, options.message)
        started = time.monotonic()
        progress.say(f"{operation}: locking and reading state of {len(inventory.hosts)} host(s)")
        try:
            states, unreachable = acquire(fleet, lock, progress, options.lock_wait)
            yield run, states, unreachable, Phase("gather", time.monotonic() - started, not unreachable)
        except KeyboardInterrupt:
            with shielded_from_ctrl_c(progress):
                _interrupted(fleet, lock, progress)
            raise
        finally:
            if lock.held:
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
        progress.say("still releasing the lock and reading where each host is; one moment")

    signal.signal(signal.SIGINT, noted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupted(fleet: Fleet, lock: FleetLock, progress: Progress) -> None:
    """After Ctrl-C: let the steps already running on hosts end (uploads stop at once), release our
    lock wherever it may have been taken (every connected host, compare-and-delete on our token,
    so a lock taken while the answer was in flight is released too), then say where each host is."""
    progress.say("interrupted: waiting for running steps, releasing the lock, then reading where each host is")
    fleet.settle()
    release(fleet, lock, progress, hosts=set(fleet.connected()) | lock.held)
    states, unreachable = read_states(fleet, progress)
    for name in sorted(states):
        state = states[name]
        progress.host(name, f"current -> {state.current or state.current_problem or 'none'}")
    for name, reason in sorted(unreachable.items()):
        progress.host(name, f"unknown: {reason}")


def _show_plan(plan: Plan, progress: Progress) -> None:
    labels = {
        planning.STAGE: "stage and switch",
        planning.SWITCH: "switch",
        planning.KEEP: "no change",
        planning.REFUSE: "REFUSED",
        planning.UNREACHABLE: "UNREACHABLE",
    }
    progress.say(f"plan: {plan.operation} -> {plan.target or '(none)'}")
    for host_plan in plan.hosts:
        label = labels[host_plan.action]
        if host_plan.action == planning.STAGE:
            label += " (cached artifact)" if host_plan.source == planning.CACHE else " (upload)"
        move = f"{host_plan.before or '-'} -> {host_plan.target or '-'}"
        reason = f": {host_plan.reason}" if host_plan.reason else ""
        pruned = plan.prune.get(host_plan.host)
        prune = f"; then prune {' '.join(pruned)}" if pruned else ""
        progress.host(host_plan.host, f"{label} {move}{reason}{prune}")
    if plan.migration:
        progress.say(f"  then run {plan.migration} once (schema {plan.migration_from} -> {plan.migration_to})")
    for warning in plan.warnings:
        progress.say(f"warning: {warning}")


def _plan_data(plan: Plan) -> list[dict[str, Any]]:
    return [
        {
            "host": h.host,
            "action": h.action,
            "before": h.before,
            "target": h.target,
            "reason": h.reason,
            "prune": list(plan.prune.get(h.host, ())),
        }
        for h in plan.hosts
    ]


def _untouched_result(host_plan: HostPlan, has_target: bool) -> HostResult:
    """The result of a host the operation does not change (kept, refused, unreachable or skipped)."""
    if host_plan.action == planning.UNREACHABLE:
        status = FAILED
    elif host_plan.action == planning.REFUSE:
        status = REFUSED
    elif host_plan.action == planning.KEEP and has_target:
        status = UNCHANGED
    else:
        status = SKIPPED
    message = host_plan.reason or ("not changed" if status == SKIPPED else "")
    return HostResult(host_plan.host, status, host_plan.before, host_plan.before, False, 0.0, message)


def _refused_or_dry_run(report: OperationReport, plan: Plan, dry_run: bool) -> bool:
    """Fill the report for a plan that stops here; True when it does."""
    report.warnings.extend(plan.warnings)
    if plan.refusal:
        report.refusal = plan.refusal
        report.hosts = [_untouched_result(host_plan, plan.target is not None) for host_plan in plan.hosts]
        return True
    if dry_run:
        report.notes.append("dry run: nothing was changed")
        report.hosts = [
            HostResult(h.host, UNCHANGED, h.before, h.before, False, 0.0, "dry run: " + _dry_run_text(plan, h))
            for h in plan.hosts
        ]
        return True
    return False


def _dry_run_text(plan: Plan, host_plan: HostPlan) -> str:
    text = {
        planning.STAGE: f"would stage and switch to {host_plan.target}",
        planning.SWITCH: f"would switch to {host_plan.target}",
        planning.KEEP: "would stay",
        planning.REFUSE: f"refused: {host_plan.reason}",
        planning.UNREACHABLE: f"unreachable: {host_plan.reason}",
    }[host_plan.action]
    pruned = plan.prune.get(host_plan.host)
    return text + (f"; would prune {' '.join(pruned)}" if pruned else "")


def _switch_result(host_plan: HostPlan, outcome: Switched | HostError) -> HostResult:
    if isinstance(outcome, HostError):
        return HostResult(host_plan.host, FAILED, host_plan.before, None, False, 0.0, outcome.reason)
    warnings = "".join(f"; warning: {text}" for text in outcome.warnings)
    if outcome.failing:
        return HostResult(
            host_plan.host,
            FAILED,
            host_plan.before,
            host_plan.target,
            True,
            outcome.seconds,
            outcome.failing + warnings,
        )
    message = (outcome.health + warnings).lstrip("; ")
    return HostResult(host_plan.host, OK, host_plan.before, host_plan.target, True, outcome.seconds, message)


def _local_hook(
    report: OperationReport, inventory: Inventory, name: str, env: Mapping[str, str], progress: Progress
) -> None:
    outcome = run_local_hook(inventory, name, env)
    if outcome is None:
        return
    report.phases.append(Phase(name, outcome.seconds, outcome.ok, outcome.detail))
    if outcome.ok:
        progress.say(f"{name}: ok ({outcome.seconds:.2f}s)")
    else:
        progress.say(f"{name}: FAILED: {outcome.detail}")
        report.problems.append(f"local hook {name} failed: {outcome.detail}")


def _in_inventory_order(inventory: Inventory, names: list[str]) -> list[str]:
    wanted = set(names)
    return [host.name for host in inventory.hosts if host.name in wanted]


def run_deploy(
    run: Run,
    artifact: Artifact,
    release_id: str | None,
    states: dict[str, HostState],
    unreachable: Unreachable,
    options: Options,
    final: bool = True,
) -> OperationReport:
    """Deploy on a locked fleet whose state was just read.

    Stage everywhere; run `migrate` once; switch batch by batch (each host: before_switch, switch,
    verify, after_switch, health check). A failing batch puts every switched host back on its
    previous release (verified) and marks the release bad. `final` runs end the operation: the
    lock is released and old releases are pruned; the drill's earlier phases keep both.
    """
    inventory, progress = run.inventory, run.progress
    release = release_id or planning.choose_release_id(states, artifact.digest, datetime.now(timezone.utc))
    plan = planning.plan_deploy(
        inventory.deploy_to,
        states,
        unreachable,
        release,
        artifact.digest,
        force=options.force,
        unpin=options.unpin,
        manifest=artifact.manifest,
        keep_releases=inventory.keep_releases,
        keep_failed_releases=inventory.keep_failed_releases,
    )
    _show_plan(plan, progress)
    report = OperationReport("deploy", release, plan=_plan_data(plan))
    if _refused_or_dry_run(report, plan, options.dry_run):
        return report

    results = {h.host: _untouched_result(h, True) for h in plan.with_action(planning.KEEP)}
    acting = {h.host: h for h in plan.acting()}

    def stop_before_switching(reason: str, failed: Mapping[str, HostError] | None = None) -> OperationReport:
        for name, host_plan in acting.items():
            error = (failed or {}).get(name)
            if error is not None:
                results[name] = HostResult(name, FAILED, host_plan.before, host_plan.before, False, 0.0, error.reason)
            else:
                results[name] = HostResult(name, SKIPPED, host_plan.before, host_plan.before, False, 0.0, reason)
        report.hosts = list(results.values())
        folders = sorted({inventory.deploy_to_of(inventory.host(name)) for name in acting})
        where = folders[0] if len(folders) == 1 else "{" + ",".join(folders) + "}"
        report.notes.append(f"no host was switched; staged folders stay in {where}/releases/{release} for inspection")
        return report

    to_stage = plan.with_action(planning.STAGE)
    if to_stage:
        started = time.monotonic()
        progress.say(
            f"staging {release} on {len(to_stage)} host(s) ({artifact.size} bytes, sha256 {artifact.digest[:12]})"
        )
        stage_failed = stage(run, artifact, release, to_stage)
        report.phases.append(Phase("stage", time.monotonic() - started, not stage_failed))
        if stage_failed:
            return stop_before_switching("staged but not switched: another host failed", stage_failed)

    if plan.migration == "migrate" and inventory.migrate and acting:
        first = _in_inventory_order(inventory, list(acting))[0]
        started = time.monotonic()
        progress.say(f"running migrate once on {first} (schema {plan.migration_from} -> {plan.migration_to})")
        problem = run_once(run, first, release, "migrate", inventory.migrate, plan.migration_from, plan.migration_to)
        report.phases.append(Phase("migrate", time.monotonic() - started, not problem, problem))
        if problem:
            report.problems.append(f"migration failed: {problem}")
            return stop_before_switching("not switched: the migration failed")

    order = _in_inventory_order(inventory, list(acting))
    groups = planning.batches(order, inventory.rollout.batch_size(len(order)))
    attempted: list[str] = []
    failure = ""
    for index, group in enumerate(groups):
        last = index == len(groups) - 1
        request = SwitchRequest(
            mode="deploy",
            operation="deploy",
            unlock=final and last,
            schema=plan.schema,
            unpin=options.unpin,
            prune=plan.prune if final and last else {},
            bad_on_failure=mark_info("deploy failed: its checks failed on this host after the switch"),
        )
        label = f"batch {index + 1}/{len(groups)}: " if len(groups) > 1 else ""
        progress.say(f"{label}switching {len(group)} host(s) to {release}")
        started = time.monotonic()
        outcomes = switch(run, [acting[name] for name in group], request)
        attempted += group
        for name in group:
            results[name] = _switch_result(acting[name], outcomes[name])
        failed = [name for name in group if results[name].status != OK]
        phase_name = f"switch batch {index + 1}" if len(groups) > 1 else "switch"
        report.phases.append(Phase(phase_name, time.monotonic() - started, not failed))
        if failed:
            failure = ", ".join(f"{name}: {results[name].message}" for name in failed)
            for later in groups[index + 1 :]:
                for name in later:
                    host_plan = acting[name]
                    results[name] = HostResult(
                        name,
                        SKIPPED,
                        host_plan.before,
                        host_plan.before,
                        False,
                        0.0,
                        f"not switched: batch {index + 1} failed",
                    )
            break
        if not last and inventory.rollout.pause:
            progress.say(f"batch {index + 1} healthy; pausing {inventory.rollout.pause:g}s")
            time.sleep(inventory.rollout.pause)

    if failure:
        _revert(run, report, results, [acting[name] for name in attempted], release, failure, final)
        if final:
            finish(run, sorted(run.lock.held))  # only our lock: marks were written by the sessions that switched
        report.hosts = list(results.values())
        return report

    if final:
        finish(run, sorted(run.lock.held), prune=plan.prune, unpin="1" if options.unpin else "")
    report.hosts = list(results.values())
    if report.ok:
        _local_hook(report, inventory, "after_deploy_local", _hook_env("deploy", release, states), progress)
    return report


def _hook_env(operation: str, release: str | None, states: Mapping[str, HostState]) -> dict[str, str]:
    previous = sorted({state.current for state in states.values() if state.current and state.current != release})
    return {
        "DEPLOYER_OPERATION": operation,
        "DEPLOYER_RELEASE": release or "",
        "DEPLOYER_PREVIOUS": ",".join(previous),
        "DEPLOYER_HOSTS": ",".join(sorted(states)),
    }


def _revert(
    run: Run,
    report: OperationReport,
    results: dict[str, HostResult],
    attempted: list[HostPlan],
    release: str,
    failure: str,
    final: bool = True,
) -> None:
    """Put every host this rollout touched back on the release it had (the shared switch helper, mode revert)."""
    progress = run.progress
    back: list[HostPlan] = []
    for host_plan in attempted:
        if host_plan.before is None:
            result = results[host_plan.host]
            result.message += "; no earlier release here to go back to"
            result.status = FAILED
            continue
        back.append(
            HostPlan(host_plan.host, planning.SWITCH, release, host_plan.before, expected_link=f"releases/{release}")
        )
    if not back:
        return
    progress.say(f"rollout failed ({failure}); reverting {len(back)} host(s) to their previous release")
    started = time.monotonic()
    request = SwitchRequest(
        mode="revert",
        operation="revert",
        unlock=final,
        mark_bad=release,
        bad_info=mark_info(f"deploy failed: {failure}"),
    )
    outcomes = switch(run, back, request)
    all_back = True
    for host_plan in back:
        outcome = outcomes[host_plan.host]
        result = results[host_plan.host]
        if isinstance(outcome, HostError):
            all_back = False
            prefix = result.message + "; " if result.status != OK else ""
            result.status = FAILED
            result.after = None
            result.verified = False
            result.message = prefix + f"REVERT FAILED: {outcome.reason}"
            continue
        result.after = host_plan.target
        result.verified = True
        extra = f"; after revert: {outcome.failing}" if outcome.failing else ""
        if result.status == OK:
            result.status = REVERTED
            result.message = f"reverted to {host_plan.target} (verified){extra}"
        else:
            result.message += f"; reverted to {host_plan.target} (verified){extra}"
    report.phases.append(Phase("revert", time.monotonic() - started, all_back))
    report.reverted_to_start = all_back


def run_rollback(
    run: Run,
    to: str | None,
    states: dict[str, HostState],
    unreachable: Unreachable,
    options: Options,
    final: bool = True,
    mark_bad: bool = True,
    pin: bool = True,
) -> OperationReport:
    """Roll back a locked fleet whose state was just read: all hosts at once (a rollback is urgent).

    Each host: switch, verify, record, pin the fleet to the target, mark the release left bad,
    after_rollback hook, health check, unlock. Hosts that fail are reported; the others are not
    held back by them. Pins, bad marks and history are written only by the switch sessions of
    hosts that switched (a host that did not switch records nothing); the drill asks for no pin
    and no bad mark at all.
    """
    inventory, progress = run.inventory, run.progress
    plan = planning.plan_rollback(
        inventory.deploy_to,
        states,
        unreachable,
        to,
        force=options.force,
        rollback_migrations=bool(inventory.rollback_migrations),
    )
    _show_plan(plan, progress)
    report = OperationReport("rollback", plan.target, plan=_plan_data(plan))
    if _refused_or_dry_run(report, plan, options.dry_run):
        return report
    target = plan.target or ""
    to_switch = plan.with_action(planning.SWITCH)

    if plan.migration and to_switch:
        first = _in_inventory_order(inventory, [h.host for h in to_switch])[0]
        started = time.monotonic()
        progress.say(
            f"running rollback_migrations once on {first} (schema {plan.migration_from} -> {plan.migration_to})"
        )
        problem = run_once(
            run,
            first,
            target,
            "rollback_migrations",
            inventory.rollback_migrations,
            plan.migration_from,
            plan.migration_to,
        )
        report.phases.append(Phase("rollback_migrations", time.monotonic() - started, not problem, problem))
        if problem:
            report.problems.append(f"rollback_migrations failed: {problem}")
            report.hosts = [_untouched_result(h, True) for h in plan.hosts]
            return report

    bad = plan.mark_bad if mark_bad else None
    results = {h.host: _untouched_result(h, True) for h in plan.hosts if not h.changes}
    outcomes: dict[str, Switched | HostError] = {}
    if to_switch:
        started = time.monotonic()
        progress.say(f"switching {len(to_switch)} host(s) back to {target}")
        request = SwitchRequest(
            mode="rollback",
            operation="rollback",
            unlock=final,
            schema=plan.schema if plan.migration else None,
            pin=pin_info(target, options.message or f"rolled back from {plan.mark_bad or '?'}") if pin else "",
            mark_bad=bad or "",
            bad_info=mark_info(options.message or f"rolled back to {target}") if bad else "",
        )
        outcomes = switch(run, to_switch, request)
        for host_plan in to_switch:
            results[host_plan.host] = _switch_result(host_plan, outcomes[host_plan.host])
        report.phases.append(
            Phase("switch", time.monotonic() - started, all(results[h.host].status == OK for h in to_switch))
        )
    if final:
        finish(run, sorted(run.lock.held))  # the lock only: hosts that did not switch record nothing
    report.hosts = list(results.values())
    confirmed = [outcome for outcome in outcomes.values() if isinstance(outcome, Switched) and outcome.switched]
    if any("pinned" in outcome.confirmed for outcome in confirmed):
        report.notes.append(
            f"the fleet is pinned to {target}: `inv deploy` refuses until `inv unpin` (or `inv deploy --unpin`)"
        )
    if bad and any("marked_bad" in outcome.confirmed for outcome in confirmed):
        report.notes.append(f"release {bad} is marked bad: rollback will not pick it again")
    if any(result.status == FAILED for result in report.hosts):
        report.notes.append("run `inv rollback` again once the failed hosts are back: it completes this rollback")
    if to_switch:
        _local_hook(report, inventory, "after_rollback_local", _hook_env("rollback", target, states), progress)
    return report


def deploy(
    inventory: Inventory,
    artifact_source: str,
    release_id: str | None = None,
    options: Options | None = None,
    progress: Progress | None = None,
) -> OperationReport:
    options = options or Options()
    progress = progress or Progress()
    if release_id is not None:
        check_release_id(release_id)
    with (
        PreparedArtifact(artifact_source) as artifact,
        _locked_run(inventory, "deploy", options, progress) as (
            run,
            states,
            unreachable,
            gathered,
        ),
    ):
        report = run_deploy(run, artifact, release_id, states, unreachable, options)
        report.phases.insert(0, gathered)
    return _counted(report, run.fleet)


def _counted(report: OperationReport, fleet: Fleet) -> OperationReport:
    """Record how many connections and sessions the operation used (issue 6's budgets, asserted in tests)."""
    report.connections = fleet.connections_opened
    report.sessions = fleet.sessions_by_host()
    return report


def rollback(
    inventory: Inventory,
    to: str | None = None,
    options: Options | None = None,
    progress: Progress | None = None,
) -> OperationReport:
    options = options or Options()
    progress = progress or Progress()
    if to is not None:
        check_release_id(to)
    with _locked_run(inventory, "rollback", options, progress) as (run, states, unreachable, gathered):
        report = run_rollback(run, to, states, unreachable, options)
        report.phases.insert(0, gathered)
    return _counted(report, run.fleet)


def _verify_phase(
    run: Run, expected: Mapping[str, str | None]
) -> tuple[dict[str, HostState], Unreachable, dict[str, str]]:
    """Read every host's state again and compare `current` with what is expected per host."""
    states, unreachable = read_states(run.fleet, run.progress)
    problems: dict[str, str] = dict(unreachable)
    for name, state in states.items():
        want = expected.get(name)
        if state.current != want:
            problems[name] = f"current is {state.current or state.current_problem or 'missing'}, expected {want}"
    return states, unreachable, problems


Check = Callable[[str], tuple[bool, str]]


class _Drill:
    """One rollback drill's phases over a locked fleet (the plan, `planning.plan_drill`, decided them)."""

    def __init__(self, run: Run, artifact: Artifact, options: Options, check: Check | None) -> None:
        self.run = run
        self.artifact = artifact
        self.options = options
        self.check = check
        self.report = OperationReport("rollback-drill", None)

    def phase(self, name: str, detail: str, ok: bool, started: float, hosts: list[HostResult], expected: str) -> bool:
        """Record a phase (after the independent testinfra checks, when it passed so far); True if it passed."""
        if ok and self.check is not None and expected:
            passed, checked = self.check(expected)  # the independent testinfra suite, over OpenSSH
            if not passed:
                ok, detail = False, f"{detail}; testinfra checks failed: {checked}"
        seconds = time.monotonic() - started
        self.report.phases.append(Phase(name, seconds, ok, detail, list(hosts)))
        self.run.progress.say(f"drill phase {name}: {'PASS' if ok else 'FAIL'} in {seconds:.2f}s {detail}".rstrip())
        return ok

    def deploy(self, name: str, release: str, states: dict[str, HostState]) -> tuple[bool, dict[str, HostState]]:
        started = time.monotonic()
        self.run.drill_phase = name
        result = run_deploy(self.run, self.artifact, release, states, {}, self.options, final=False)
        self.report.warnings.extend(result.warnings)
        fresh, _unreachable, problems = _verify_phase(self.run, {n: release for n in states})
        if result.refusal:
            return self.phase(name, f"refused: {result.refusal}", False, started, [], ""), fresh
        merged = _merge(result, problems)
        detail = f"release {release}" + _problem_text(problems)
        return self.phase(name, detail, result.ok and not problems, started, merged.hosts, release), fresh

    def rollback(self, target: str, states: dict[str, HostState]) -> tuple[bool, dict[str, HostState]]:
        started = time.monotonic()
        self.run.drill_phase = "rollback"
        back = run_rollback(self.run, target, states, {}, self.options, final=False, mark_bad=False, pin=False)
        fresh, _unreachable, problems = _verify_phase(self.run, {n: target for n in states})
        if back.refusal:
            return self.phase("rollback", f"refused: {back.refusal}", False, started, [], ""), fresh
        back = _merge(back, problems)
        detail = f"back to {target}" + _problem_text(problems)
        return self.phase("rollback", detail, back.ok and not problems, started, back.hosts, target), fresh

    def restore(self, baseline: str, states: dict[str, HostState]) -> dict[str, HostState]:
        """Put every host that is not on the drill's starting release back on it (verified): a failed
        drill never leaves the fleet worse than it found it."""
        away = [
            HostPlan(name, planning.SWITCH, state.current, baseline, expected_link=state.current_link)
            for name, state in sorted(states.items())
            if state.current != baseline
        ]
        if not away:
            return states
        started = time.monotonic()
        self.run.drill_phase = "restore"
        self.run.progress.say(f"drill failed: putting {len(away)} host(s) back on {baseline}")
        outcomes = switch(self.run, away, SwitchRequest(mode="revert", operation="revert"))
        results = [_switch_result(host_plan, outcomes[host_plan.host]) for host_plan in away]
        fresh, _unreachable, problems = _verify_phase(self.run, {n: baseline for n in states})
        detail = f"back on {baseline}" + _problem_text(problems)
        seconds = time.monotonic() - started
        self.report.phases.append(Phase("restore", seconds, not problems, detail, results))
        self.run.progress.say(f"drill restore: {'done' if not problems else 'INCOMPLETE'} {detail}")
        return fresh

    def where(self, states: dict[str, HostState], baseline: str | None) -> list[HostResult]:
        """Where each host ends (read back): the drill's final per-host result."""
        return [
            HostResult(
                name,
                OK if state.current in (baseline, self.report.target) and state.current else FAILED,
                baseline,
                state.current,
                True,
                0.0,
                f"on {state.current or state.current_problem or 'no release'}",
            )
            for name, state in sorted(states.items())
        ]


def drill(
    inventory: Inventory,
    artifact_source: str,
    options: Options | None = None,
    progress: Progress | None = None,
    check: Check | None = None,
) -> OperationReport:
    """Deploy, verify; roll back to the starting release, verify; deploy again, verify.

    The whole drill holds the fleet lock, pins nothing and marks nothing bad by itself. Its
    releases are decided up front by the planner (`planning.plan_drill`); when the artifact is
    already live the drill is live -> previous -> live. A failed phase puts every host back on
    the release the drill found before it returns, and the report says where each host is.
    """
    options = options or Options()
    progress = progress or Progress()
    with (
        PreparedArtifact(artifact_source) as artifact,
        _locked_run(inventory, "rollback-drill", options, progress) as (run, states, unreachable, _gathered),
    ):
        started = time.monotonic()
        plan = planning.plan_drill(
            inventory.deploy_to, states, unreachable, artifact.digest, datetime.now(timezone.utc)
        )
        drilled = _Drill(run, artifact, options, check)
        report = drilled.report
        if plan.refusal:
            drilled.phase("baseline", plan.refusal, False, started, [], "")
            if unreachable:
                report.hosts = [
                    HostResult(n, FAILED, None, None, False, 0.0, r) for n, r in sorted(unreachable.items())
                ]
                return report
            raise PlanRefused(plan.refusal)
        baseline = plan.baseline
        assert baseline is not None
        report.target = plan.release_id
        shape = f"live {baseline} -> {plan.rollback_to} -> {baseline}" if plan.live else f"fleet on {baseline}"
        drilled.phase(
            "baseline",
            shape,
            True,
            started,
            [HostResult(n, UNCHANGED, baseline, baseline, True) for n in sorted(states)],
            "",
        )
        ok, states = drilled.deploy("deploy", plan.release_id, states)
        if ok:
            ok, states = drilled.rollback(plan.rollback_to, states)
        if ok:
            ok, states = drilled.deploy("redeploy", plan.release_id, states)
        if not ok:
            states = drilled.restore(baseline, states)
        run.drill_phase = ""
        prune = planning.plan_prune(
            inventory.deploy_to, states, inventory.keep_releases, inventory.keep_failed_releases
        )
        finish(run, sorted(run.lock.held), prune=prune if ok else {})
        report.hosts = drilled.where(states, baseline)
    return _counted(report, run.fleet)


def _with(options: Options, **changes: Any) -> Options:
    return Options(**{**options.__dict__, **changes})


def _problem_text(problems: Mapping[str, str]) -> str:
    return "".join(f"; {name}: {problem}" for name, problem in sorted(problems.items()))


def _merge(result: OperationReport, problems: Mapping[str, str]) -> OperationReport:
    """Mark hosts whose independent read-back disagreed with the operation's own result."""
    for host_result in result.hosts:
        problem = problems.get(host_result.host)
        if problem:
            host_result.status = FAILED
            host_result.verified = False
            host_result.message = problem
    return result


# --- reading and tidying fleet state ---


@dataclass(frozen=True)
class FleetView:
    """Every host's state as read (no lock taken), for status, history, releases, lock-status."""

    inventory: Inventory
    states: dict[str, HostState]
    unreachable: Unreachable


def read_fleet(inventory: Inventory, options: Options | None = None, history: int = 0) -> FleetView:
    options = options or Options()
    with _open_fleet(inventory, options) as fleet:
        states, unreachable = read_states(fleet, Progress(quiet=True), history=history)
    return FleetView(inventory, states, unreachable)


@contextmanager
def _quick_locked(
    inventory: Inventory, operation: str, options: Options, progress: Progress
) -> Iterator[tuple[Run, dict[str, HostState], Unreachable]]:
    with _locked_run(inventory, operation, options, progress) as (run, states, unreachable, _gathered):
        yield run, states, unreachable


def unpin(inventory: Inventory, options: Options | None = None, progress: Progress | None = None) -> OperationReport:
    """Remove the pin a rollback left, on every host (under the lock)."""
    options = options or Options()
    progress = progress or Progress()
    report = OperationReport("unpin", None)
    with _quick_locked(inventory, "unpin", options, progress) as (run, states, unreachable):
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
            report.notes.append("unreachable hosts keep their pin file; run `inv unpin` again when they are back")
    return report


def prune(inventory: Inventory, options: Options | None = None, progress: Progress | None = None) -> OperationReport:
    """Remove old releases beyond keep_releases / keep_failed_releases, never a protected one."""
    options = options or Options()
    progress = progress or Progress()
    report = OperationReport("prune", None)
    with _quick_locked(inventory, "prune", options, progress) as (run, states, unreachable):
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
    with _open_fleet(inventory, options) as fleet:
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
        report.notes.append("a lock changed since it was shown and was left in place: run `inv unlock` again to see it")
    return report


def _unlock_result(name: str, state: HostState, outcome: ScriptOutput | HostError) -> HostResult:
    """What removing the shown lock did on one host, from the host's own confirmation records."""
    current = state.current
    if isinstance(outcome, HostError):
        return HostResult(name, FAILED, current, current, False, 0.0, outcome.reason)
    if outcome.has("unlocked"):
        return HostResult(name, OK, current, current, True, 0.0, "lock removed")
    if outcome.has("lock_absent"):
        return HostResult(name, UNCHANGED, current, current, True, 0.0, "the lock was already gone")
    changed = outcome.first("lock_changed")
    if changed is not None:
        return HostResult(
            name, REFUSED, current, current, True, 0.0, "left in place: another lock was taken since it was shown"
        )
    reason = "; ".join(outcome.warnings()) or "the host did not confirm the removal"
    return HostResult(name, FAILED, current, current, False, 0.0, f"lock not removed: {reason}")


def _lock_summary(lock_state: LockState | None) -> dict[str, Any] | None:
    if lock_state is None:
        return None
    stale = is_stale(lock_state)
    return {"holder": dict(lock_state.info), "description": lock_state.describe(), "stale": stale}


def status_data(view: FleetView) -> dict[str, Any]:
    """Each host's current and previous release, releases, lock, pin, problems; the fleet's split."""
    deploy_to = view.inventory.deploy_to
    hosts: list[dict[str, Any]] = []
    for host in view.inventory.hosts:
        if host.name in view.unreachable:
            hosts.append(
                {
                    "host": host.name,
                    "deploy_to": view.inventory.deploy_to_of(host),
                    "reachable": False,
                    "error": view.unreachable[host.name],
                }
            )
            continue
        state = view.states[host.name]
        previous, previous_problem = state.previous_version(deploy_to)
        hosts.append(
            {
                "host": host.name,
                "deploy_to": view.inventory.deploy_to_of(host),
                "reachable": True,
                "hostname": state.hostname,
                "current": state.current,
                "current_link": state.current_link or None,
                "previous_version": previous,
                "problems": [p for p in (state.current_problem, previous_problem) if p] + list(state.notes),
                "releases": [
                    {
                        "id": info.release_id,
                        "status": info.status,
                        "digest": info.digest or None,
                        "bad": dict(info.bad) if info.bad is not None else None,
                    }
                    for info in sorted(state.releases.values(), key=lambda i: i.order_key)
                ],
                "lock": _lock_summary(state.lock),
                "pin": dict(state.pin) if state.pin else None,
                "free_kb": state.free_kb,
            }
        )
    split = planning.split_of(view.states)
    pin = planning.fleet_pin(view.states)
    schema = planning.fleet_schema(view.states)
    return {
        "deploy_to": deploy_to,
        "hosts": hosts,
        "consistent": len(split) <= 1 and all(s.current for s in view.states.values()) and not view.unreachable,
        "split": {release: sorted(n for n, s in view.states.items() if s.current == release) for release in split},
        "currents": sorted({s.current or "-" for s in view.states.values()}),
        "pin": dict(pin) if pin else None,
        "schema": schema.__dict__ if schema else None,
        "locked": sorted(name for name, state in view.states.items() if state.lock is not None),
    }


def status_exit_code(view: FleetView) -> int:
    problems = view.unreachable or any(s.current_problem for s in view.states.values())
    return 1 if problems or len(planning.split_of(view.states)) > 1 else 0


def history_entries(view: FleetView, limit: int) -> list[dict[str, Any]]:
    """The fleet's history, newest first: identical events on several hosts are shown once, with their hosts."""
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    position: dict[tuple[Any, ...], int] = {}
    fields = ("op", "from", "to", "release", "user", "result")
    for name, state in view.states.items():
        seen: dict[tuple[str, ...], int] = {}
        for index, entry in enumerate(state.history):
            # One operation's event on several hosts is one line: keyed by its run id (not by the
            # second it happened in, which differs between hosts); old entries without one by time.
            event = (str(entry.get("run") or entry.get("time", "")), *(str(entry.get(f, "")) for f in fields))
            seen[event] = seen.get(event, 0) + 1
            key = (*event, seen[event])
            item = merged.setdefault(key, {**entry, "hosts": []})
            item["hosts"].append(name)
            item["time"] = min(str(item.get("time", "")), str(entry.get("time", "")))
            position[key] = max(position.get(key, -(10**9)), index - len(state.history))
    ordered = [
        merged[key] for key in sorted(merged, key=lambda key: (merged[key]["time"], position[key]), reverse=True)
    ]
    for item in ordered:
        item["hosts"].sort()
    return _drills_as_one(ordered)[:limit]


def _drills_as_one(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A drill's switches (entries carrying `drill`: its phase) as one entry, its phases inside in order."""
    drills: dict[str, dict[str, Any]] = {}
    shown: list[dict[str, Any]] = []
    for entry in entries:
        phase = entry.get("drill")
        run_id = str(entry.get("run") or "")
        if not phase or not run_id:
            shown.append(entry)
            continue
        drill = drills.get(run_id)
        if drill is None:
            drill = {
                "op": "rollback-drill",
                "run": run_id,
                "time": entry.get("time", ""),
                "user": entry.get("user", ""),
                "hosts": [],
                "phases": [],
                "result": "ok",
            }
            drills[run_id] = drill
            shown.append(drill)
        drill["time"] = min(str(drill["time"]), str(entry.get("time", "")))
        drill["hosts"] = sorted(set(drill["hosts"]) | set(entry["hosts"]))
        drill["phases"].insert(
            0,
            {key: entry.get(key) for key in ("drill", "op", "from", "to", "result", "time", "hosts") if key in entry},
        )
        if entry.get("result") not in (None, "ok"):
            drill["result"] = "failed"
    for drill in drills.values():
        phases = drill["phases"]
        drill["from"], drill["to"] = phases[0].get("from"), phases[-1].get("to")
        if phases[-1].get("drill") == "restore":
            drill["result"] = "failed (restored)"
    return shown


def releases_table(view: FleetView) -> list[dict[str, Any]]:
    """Per release: which hosts have it, are on it, record it as previous; bad, failed, pinned."""
    pin = planning.fleet_pin(view.states)
    pinned = pin.get("release") if pin else None
    table: dict[str, dict[str, Any]] = {}
    for name, state in sorted(view.states.items()):
        previous, _problem = state.previous_version(view.inventory.deploy_to)
        for info in state.releases.values():
            row = table.setdefault(
                info.release_id,
                {
                    "id": info.release_id,
                    "staged_at": info.staged_at or None,
                    "digest": info.digest or None,
                    "schema": info.schema,
                    "hosts": [],
                    "current_on": [],
                    "previous_on": [],
                    "failed_on": [],
                    "bad": None,
                    "pinned": info.release_id == pinned,
                },
            )
            row["hosts"].append(name)
            if state.current == info.release_id:
                row["current_on"].append(name)
            if previous == info.release_id:
                row["previous_on"].append(name)
            if info.status in ("failed", "validating"):
                row["failed_on"].append(name)
            if info.bad is not None and row["bad"] is None:
                row["bad"] = dict(info.bad)
    return sorted(table.values(), key=lambda row: (row["staged_at"] or "", row["id"]), reverse=True)
