"""How a rollback drill is decided, before anything changes: its preconditions, releases and target."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from deployer.invocation import command
from deployer.plan.deploy import choose_release_id
from deployer.plan.facts import describe_pin, fleet_pin
from deployer.plan.rollback import choose_rollback_target
from deployer.state import HostState


@dataclass(frozen=True)
class DrillPlan:
    """What a rollback drill will do: deploy `release_id`, roll back to `rollback_to`, deploy
    `release_id` again; `baseline` is where the fleet is now and where a failed drill puts it back."""

    baseline: str | None
    release_id: str
    rollback_to: str
    live: bool = False  # the artifact is the live release: the drill is live -> previous -> live
    refusal: str = ""


def plan_drill(
    deploy_to: str,
    states: Mapping[str, HostState],
    unreachable: Mapping[str, str],
    digest: str,
    now: datetime,
    signed_only: bool = False,
) -> DrillPlan:
    """Decide a drill before anything changes (its preconditions, its releases, where it goes back to).

    Refused (nothing changed) unless every host is reachable, on one release, and not pinned.
    When the artifact is what the fleet already runs (a CI job retried), the drill exercises that
    release's own previousVersion and comes back; it never goes further back than that.
    """
    refusal = _drill_precondition(states, unreachable)
    baselines = {state.current for state in states.values()}
    baseline = next(iter(baselines)) if len(baselines) == 1 and not unreachable else None
    if refusal or baseline is None:
        return DrillPlan(baseline, "", "", refusal=refusal)
    live = all(
        (info := state.releases.get(baseline)) is not None and info.digest == digest for state in states.values()
    )
    if not live:
        return DrillPlan(baseline, choose_release_id(states, digest, now, signed_only), baseline)
    target, why = choose_rollback_target(deploy_to, states, True)
    if target is None or target == baseline:
        return DrillPlan(
            baseline,
            baseline,
            "",
            live=True,
            refusal=f"this artifact is already live (release {baseline}) and there is no earlier release to drill "
            f"back to ({why or 'none recorded'}); nothing was changed",
        )
    missing = sorted(
        name for name, state in states.items() if (info := state.releases.get(target)) is None or not info.usable
    )
    if missing:
        return DrillPlan(
            baseline,
            baseline,
            target,
            live=True,
            refusal=f"this artifact is already live (release {baseline}); its previous release {target} "
            f"is missing or unusable on {', '.join(missing)}, so the drill cannot go back to it; nothing was changed",
        )
    return DrillPlan(baseline, baseline, target, live=True)


def _drill_precondition(states: Mapping[str, HostState], unreachable: Mapping[str, str]) -> str:
    """Why the fleet cannot be drilled now ("" when it can): all reachable, one release, not pinned."""
    if unreachable:
        return f"unreachable: {', '.join(sorted(unreachable))}"
    without_release = sorted(name for name, state in states.items() if state.current is None)
    if without_release:
        return (
            f"the drill needs a baseline release on every host, and {', '.join(without_release)} "
            f"have none: run `{command('deploy')}` once with the current version first"
        )
    if len({state.current for state in states.values()}) != 1:
        split = ", ".join(f"{name}={state.current}" for name, state in sorted(states.items()))
        return f"the drill needs the whole fleet on one release; hosts differ: {split}"
    pin = fleet_pin(states)
    if pin is not None:
        return (
            f"the fleet is {describe_pin(pin)}: a drill would deploy over an incident's rollback; "
            f"run `{command('unpin')}` first if the incident is over"
        )
    return ""
