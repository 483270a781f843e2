"""Plans shown to the operator, and what each host's part of an operation becomes in the report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deployer import plan as planning
from deployer.errors import HostError
from deployer.inventory import Inventory
from deployer.phases import (
    Switched,
    run_local_hook,
)
from deployer.plan import HostPlan, Plan
from deployer.report import (
    FAILED,
    OK,
    REFUSED,
    SKIPPED,
    UNCHANGED,
    HostResult,
    OperationReport,
    Phase,
    Progress,
)
from deployer.state import HostState

# What each planned action is called: in the plan shown before acting, and in a dry run's rows.
ACTION_WORDS = {
    planning.STAGE: ("stage and switch", "would stage and switch to {target}"),
    planning.SWITCH: ("switch", "would switch to {target}"),
    planning.KEEP: ("no change", "would stay"),
    planning.REFUSE: ("REFUSED", "refused: {reason}"),
    planning.UNREACHABLE: ("UNREACHABLE", "unreachable: {reason}"),
}


def show_plan(plan: Plan, progress: Progress) -> None:
    if plan.refusal:  # nothing will happen: the verdict says why, the summary names each host's part
        return
    progress.say(f"plan: {plan.operation} -> {plan.target or '(none)'}")
    for host_plan in plan.hosts:
        label = ACTION_WORDS[host_plan.action][0]
        if host_plan.action == planning.STAGE:
            label += " (cached artifact)" if host_plan.source == planning.CACHE else " (upload)"
        if host_plan.target and host_plan.target == plan.target and host_plan.action != planning.KEEP:
            move = f"from {host_plan.before or '(none)'}"  # the target is on the plan's first line
        else:
            move = f"{host_plan.before or '-'} -> {host_plan.target or '-'}"
        reason = f": {host_plan.reason}" if host_plan.reason else ""
        pruned = plan.prune.get(host_plan.host)
        prune = f"; then prune {' '.join(pruned)}" if pruned else ""
        progress.say(f"  {host_plan.host}: {label} {move}{reason}{prune}")
    if plan.migration:
        progress.say(f"  then run {plan.migration} once (schema {plan.migration_from} -> {plan.migration_to})")


def plan_data(plan: Plan) -> list[dict[str, Any]]:
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


def untouched_result(host_plan: HostPlan, has_target: bool, refused: bool = False) -> HostResult:
    """The result of a host the operation does not change (kept, refused, unreachable or skipped).

    Under a refused plan every kept host is `unchanged` with the same reason, whatever the operation
    (one word for one thing in every command); `skipped` is only for a host a running operation
    stopped before reaching."""
    if host_plan.action == planning.UNREACHABLE:
        status = FAILED
    elif host_plan.action == planning.REFUSE:
        status = REFUSED
    elif host_plan.action == planning.KEEP and refused:
        return HostResult(
            host_plan.host, UNCHANGED, host_plan.before, host_plan.before, False, 0.0, planning.REFUSED_REASON
        )
    elif host_plan.action == planning.KEEP and has_target:
        status = UNCHANGED
    else:
        status = SKIPPED
    message = host_plan.reason or ("not changed" if status == SKIPPED else "")
    return HostResult(host_plan.host, status, host_plan.before, host_plan.before, False, 0.0, message)


def refused_or_dry_run(report: OperationReport, plan: Plan, dry_run: bool) -> bool:
    """Fill the report for a plan that stops here; True when it does."""
    report.warnings.extend(plan.warnings)
    if plan.refusal:
        report.refusal = plan.refusal
        report.hosts = [untouched_result(host_plan, plan.target is not None, refused=True) for host_plan in plan.hosts]
        return True
    if dry_run:
        report.dry_run = True
        report.hosts = [
            HostResult(h.host, UNCHANGED, h.before, h.before, False, 0.0, "dry run: " + _dry_run_text(plan, h))
            for h in plan.hosts
        ]
        return True
    return False


def _dry_run_text(plan: Plan, host_plan: HostPlan) -> str:
    text = ACTION_WORDS[host_plan.action][1].format(target=host_plan.target, reason=host_plan.reason)
    pruned = plan.prune.get(host_plan.host)
    return text + (f"; would prune {' '.join(pruned)}" if pruned else "")


def switch_result(host_plan: HostPlan, outcome: Switched | HostError) -> HostResult:
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


def local_hook(
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


def in_inventory_order(inventory: Inventory, names: list[str]) -> list[str]:
    wanted = set(names)
    return [host.name for host in inventory.hosts if host.name in wanted]


def hook_env(operation: str, release: str | None, states: Mapping[str, HostState]) -> dict[str, str]:
    previous = sorted({state.current for state in states.values() if state.current and state.current != release})
    return {
        "DEPLOYER_OPERATION": operation,
        "DEPLOYER_RELEASE": release or "",
        "DEPLOYER_PREVIOUS": ",".join(previous),
        "DEPLOYER_HOSTS": ",".join(sorted(states)),
    }
