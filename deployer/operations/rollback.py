"""The rollback workflow: every host at once to the target the planner chose (`plan.plan_rollback`)."""

from __future__ import annotations

import time

from deployer import host_signers
from deployer import plan as planning
from deployer.errors import HostError
from deployer.inventory import Inventory
from deployer.invocation import command
from deployer.operations.outcome import (
    hook_env,
    local_hook,
    plan_data,
    refused_or_dry_run,
    show_plan,
    switch_result,
    untouched_result,
)
from deployer.operations.session import Options, Unreachable, finished, locked_run
from deployer.phases import (
    Run,
    Switched,
    SwitchRequest,
    finish,
    mark_info,
    migrate_once,
    pin_info,
    switch,
)
from deployer.release import check_release_name
from deployer.report import (
    FAILED,
    OK,
    HostResult,
    OperationReport,
    Phase,
    Progress,
)
from deployer.state import HostState


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
        untrusted=host_signers.untrusted_releases(inventory, states),
    )
    show_plan(plan, progress)
    report = OperationReport(
        "rollback", plan.target, plan=plan_data(plan), revision=run.revision_of(plan.target).as_dict()
    )
    if refused_or_dry_run(report, plan, options.dry_run):
        return report
    target = plan.target or ""
    to_switch = plan.with_action(planning.SWITCH)
    if not _rollback_migrations(run, plan, report):
        return report

    bad = plan.mark_bad if mark_bad else None
    request = SwitchRequest(
        mode="rollback",
        operation="rollback",
        unlock=final,
        schema=plan.schema if plan.migration else None,
        pin=pin_info(target, options.message or f"rolled back from {_left(plan, to_switch)}", run.revision_of(target))
        if pin
        else "",
        mark_bad=bad or "",
        bad_info=mark_info(options.message or f"rolled back to {target}") if bad else "",
    )
    results, outcomes = _switch_back(run, plan, request, report)
    if final:
        finish(run, sorted(run.lock.held))  # the lock only: hosts that did not switch record nothing
    report.hosts = list(results.values())
    _notes(report, target, bad, outcomes)
    if to_switch:
        local_hook(report, inventory, "after_rollback_local", hook_env("rollback", target, states), progress)
    return report


def _left(plan: planning.Plan, switching: list[planning.HostPlan]) -> str:
    """The release(s) the rollback leaves, by name: what the pin says it was rolled back from."""
    if plan.mark_bad:
        return plan.mark_bad
    left = sorted({host.before for host in switching if host.before})
    return ", ".join(left) if left else "no release (the hosts had none current)"


def _switch_back(
    run: Run, plan: planning.Plan, request: SwitchRequest, report: OperationReport
) -> tuple[dict[str, HostResult], dict[str, Switched | HostError]]:
    """Switch every host the plan moves, all at once; results for every host, and the switch outcomes."""
    to_switch = plan.with_action(planning.SWITCH)
    results = {h.host: untouched_result(h, True) for h in plan.hosts if not h.changes}
    if not to_switch:
        return results, {}
    started = time.monotonic()
    run.progress.say(f"switching {len(to_switch)} host(s) back to {plan.target}")
    outcomes = switch(run, to_switch, request)
    for host_plan in to_switch:
        results[host_plan.host] = switch_result(host_plan, outcomes[host_plan.host])
    all_ok = all(results[h.host].status == OK for h in to_switch)
    report.phases.append(Phase("switch", time.monotonic() - started, all_ok))
    return results, outcomes


def _rollback_migrations(run: Run, plan: planning.Plan, report: OperationReport) -> bool:
    """Run rollback_migrations once, when the plan asks for it; False (report filled) when it failed."""
    to_switch = plan.with_action(planning.SWITCH)
    if not plan.migration or not to_switch:
        return True
    hosts = [h.host for h in to_switch]
    target = plan.target or ""
    if migrate_once(run, report, "rollback_migrations", target, hosts, plan.migration_from, plan.migration_to):
        return True
    report.hosts = [untouched_result(h, True) for h in plan.hosts]
    return False


def _notes(report: OperationReport, target: str, bad: str | None, outcomes: dict[str, Switched | HostError]) -> None:
    """What the operator must know next, from what the hosts confirmed (never from what was asked)."""
    confirmed = [outcome for outcome in outcomes.values() if isinstance(outcome, Switched) and outcome.switched]
    if any("pinned" in outcome.confirmed for outcome in confirmed):
        report.notes.append(
            f"the fleet is pinned to {target}: `{command('deploy')}` refuses until `{command('unpin')}` "
            f"(or `{command('deploy --unpin')}`)"
        )
    if bad and any("marked_bad" in outcome.confirmed for outcome in confirmed):
        report.notes.append(f"release {bad} is marked bad: rollback will not pick it again")
    if any(result.status == FAILED for result in report.hosts):
        report.notes.append(
            f"run `{command('rollback')}` again once the failed hosts are back: it completes this rollback"
        )


def rollback(
    inventory: Inventory,
    to: str | None = None,
    options: Options | None = None,
    progress: Progress | None = None,
) -> OperationReport:
    options = options or Options()
    progress = progress or Progress()
    if to is not None:
        check_release_name(to, "--to")
    with locked_run(inventory, "rollback", options, progress) as (run, states, unreachable, gathered):
        report = run_rollback(run, to, states, unreachable, options)
        report.phases.insert(0, gathered)
    return finished(report, run)
