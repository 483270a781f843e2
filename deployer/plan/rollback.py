"""How a rollback is decided: **the rollback target**, chosen once for the whole fleet, and what each
host does to reach it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from deployer.plan.facts import (
    SCHEMA_SPLIT_HINT,
    bad_marks,
    describe_releases,
    describe_split,
    fleet_schema,
    manifest_of,
    release_anywhere,
    schema_disagreement,
    schema_problem,
    split_of,
)
from deployer.plan.model import KEEP, REFUSE, SWITCH, UNREACHABLE, HostPlan, Plan, held_back
from deployer.plan.names import resolve_release
from deployer.state import HostState, SchemaRecord


def _rolled_back_to(state: HostState) -> str | None:
    """The release this host was rolled back to by the last operation, if it is still on it."""
    last = state.last_op
    if last and last.get("op") == "rollback" and isinstance(last.get("to"), str) and last["to"] == state.current:
        return state.current
    return None


def _switch_time(state: HostState) -> str:
    """When this host's last switch (deploy, rollback or revert) happened, as it recorded it; "" unknown."""
    return str(state.last_op.get("time") or "") if state.last_op else ""


def _latest_rollback_targets(states: Mapping[str, HostState]) -> set[str]:
    """Where the most recent rollback sent its hosts, while it is the fleet's latest switch.

    Every switch a host records ends an older rollback's claim: a canary rolled back to R1, then
    the rest of the fleet deployed R3 and R4, leaves no unfinished rollback to R1 to complete (the
    hosts are on different releases). A host still on the target of an older, finished rollback
    is not part of an unfinished one. More than one target means rollbacks that cannot be
    ordered: the caller refuses.
    """
    newest = max((_switch_time(state) for state in states.values()), default="")
    latest: set[str] = set()
    for state in states.values():
        target = _rolled_back_to(state)
        if target is not None and _switch_time(state) == newest:
            latest.add(target)
    return latest


def _describe_split(counts: Iterable[tuple[str | None, int]]) -> str:
    return ", ".join(f"{release or 'none'} on {count} host{'s' if count != 1 else ''}" for release, count in counts)


def choose_rollback_target(
    deploy_to: str, states: Mapping[str, HostState], all_reachable: bool
) -> tuple[str | None, str]:
    """The fleet's default rollback target, or (None, why there is none).

    - Hosts that a previous rollback left on release T, while the fleet is not all known to be on
      T (a host was down or not switched), mean that rollback is unfinished: the target stays T,
      so a rerun completes it and never takes anyone further back.
    - Otherwise the fleet is on one release C (or part-way through a switch from B to C, where
      C's previousVersion is B): the target is the previousVersion that C records.
    """
    currents = Counter(state.current for state in states.values() if state.current is not None)
    pending = _latest_rollback_targets(states)
    if len(pending) > 1:
        return (
            None,
            f"earlier rollbacks left hosts on different releases ({', '.join(sorted(pending))}); use --to",
        )
    if pending:
        (target,) = pending
        if not (all_reachable and set(currents) == {target} and sum(currents.values()) == len(states)):
            return target, ""

    if not currents:
        return None, "no host has a current release to roll back from"
    previous_by_current: dict[str, set[str]] = {}
    for state in states.values():
        if state.current is None:
            continue
        previous, _problem = state.previous_version(deploy_to)
        previous_by_current.setdefault(state.current, set())
        if previous:
            previous_by_current[state.current].add(previous)

    if len(currents) == 1:
        (current,) = currents
    elif len(currents) == 2:
        first, second = currents
        first_after_second = previous_by_current[first] == {second}
        second_after_first = previous_by_current[second] == {first}
        if first_after_second and not second_after_first:
            current = first
        elif second_after_first and not first_after_second:
            current = second
        else:
            return (
                None,
                f"hosts are on different releases ({_describe_split(currents.most_common())}); use --to",
            )
    else:
        return None, f"hosts are on different releases ({_describe_split(currents.most_common())}); use --to"

    previous_set = previous_by_current[current]
    if len(previous_set) > 1:
        return None, (
            f"hosts on {current} disagree about the previous release ({', '.join(sorted(previous_set))}); use --to"
        )
    if not previous_set:
        return None, f"there is no earlier release to roll back to: {current} records no previousVersion"
    return _skip_bad(next(iter(previous_set)), states)


def _skip_bad(target: str, states: Mapping[str, HostState]) -> tuple[str | None, str]:
    """Follow previousVersion past releases marked bad: a default target is never a known-bad release."""
    marks = bad_marks(states)
    seen = {target}
    skipped: list[str] = []
    while target in marks:
        skipped.append(target)
        earlier = {
            info.previous
            for state in states.values()
            if (info := state.releases.get(target)) is not None and info.previous is not None
        }
        if len(earlier) != 1:
            return None, (
                f"the previous release {skipped[0]} is marked bad ({marks[skipped[0]].get('why') or 'no reason'}) "
                "and no single release before it is recorded; use --to"
            )
        (target,) = earlier
        if target in seen:
            return None, "previousVersion records form a loop; use --to"
        seen.add(target)
    return target, ""


def plan_rollback(
    deploy_to: str,
    states: Mapping[str, HostState],
    unreachable: Mapping[str, str],
    to: str | None = None,
    *,
    force: bool = False,
    rollback_migrations: bool = False,
    untrusted: Mapping[tuple[str, str], str] | None = None,
) -> Plan:
    """Plan a rollback to `to`, or to the fleet's previous release; decided once for all hosts.

    The release left behind is marked bad; the target's declared schema is checked against the
    recorded one (refused unless `force`, or `rollback_migrations` can take the database back).
    Refused as a whole, recording nothing, when no host can be switched to the target, or when
    the target's signature is no longer trusted on a host (`untrusted`: (host, release) -> why;
    `force` goes ahead, saying so).
    """
    if to is not None:
        target, why = resolve_release(to, states)  # an id, a version label or a commit prefix
    else:
        target, why = choose_rollback_target(deploy_to, states, not unreachable)
    if target is None:
        untouched = [HostPlan(name, KEEP, state.current, None) for name, state in states.items()]
        untouched += [HostPlan(name, UNREACHABLE, None, None, reason) for name, reason in unreachable.items()]
        return Plan("rollback", None, tuple(sorted(untouched, key=lambda h: h.host)), why)

    hosts = [HostPlan(name, UNREACHABLE, None, target, reason) for name, reason in unreachable.items()]
    hosts += [_rollback_host(name, state, deploy_to, target, to is None) for name, state in states.items()]
    hosts.sort(key=lambda plan: plan.host)
    refusal = _unreachable_target(states, hosts, target, target if to is not None else None)
    warnings = _rollback_warnings(states, target)
    recorded = fleet_schema(states)
    schema_refusal, schema_warnings, new_schema, migration = _rollback_schema(
        states, target, recorded, force, rollback_migrations
    )
    signature_refusal, signature_warnings = _signature_guard(hosts, target, untrusted or {}, force)
    split = schema_disagreement(states)
    if split and force:
        schema_warnings.append(split + "; taking the highest (--force)")
    elif split:
        schema_refusal = split + SCHEMA_SPLIT_HINT  # first: the other schema checks read the highest
    refusal = refusal or schema_refusal or signature_refusal
    warnings += signature_warnings
    return Plan(
        "rollback",
        target,
        held_back(hosts, refusal),
        refusal,
        tuple(warnings + schema_warnings),
        mark_bad=None if refusal else _left_behind(states, target),
        schema=new_schema,
        migration=migration,
        migration_from=recorded.version if recorded else None,
        migration_to=new_schema.version if migration and new_schema else None,
    )


def _rollback_host(name: str, state: HostState, deploy_to: str, target: str, default_target: bool) -> HostPlan:
    """What one host does to reach `target`: switch, keep, or refuse (and why)."""
    before = state.current
    release = state.releases.get(target)
    _previous, previous_problem = state.previous_version(deploy_to)
    if before == target:
        return HostPlan(name, KEEP, before, target, "already on the target")
    if state.current_kind == "notlink":
        return HostPlan(name, REFUSE, before, target, state.current_problem + "; refusing to replace it")
    if default_target and previous_problem:
        return HostPlan(name, REFUSE, before, target, previous_problem + "; host left untouched")
    if release is None:
        return HostPlan(name, REFUSE, before, target, f"release {target} is not present on this host")
    if not release.usable:
        return HostPlan(name, REFUSE, before, target, f"release {target} is marked {release.status} here")
    return HostPlan(name, SWITCH, before, target, expected_link=state.current_link)


def _signature_guard(
    hosts: list[HostPlan], target: str, untrusted: Mapping[tuple[str, str], str], force: bool
) -> tuple[str, list[str]]:
    """(refusal, warnings) for switching hosts to `target` when its signature is no longer trusted there."""
    reasons: dict[str, list[str]] = {}
    for host in hosts:
        why = untrusted.get((host.host, target)) if host.action == SWITCH else None
        if why:
            reasons.setdefault(why, []).append(host.host)
    if not reasons:
        return "", []
    problem = "; ".join(f"{why} (on {', '.join(names)})" for why, names in reasons.items())
    if force:
        return "", [f"release {target} is not trusted any more: {problem}; SWITCHING ANYWAY (--force)"]
    return f"release {target} may not go live again: {problem}; --force switches to it anyway", []


def _unreachable_target(states: Mapping[str, HostState], hosts: list[HostPlan], target: str, to: str | None) -> str:
    """Why the rollback is refused as a whole because nobody can reach the target ("" when someone can)."""
    if to is not None and release_anywhere(states, to) is None:
        return f"release {to} is not on any reachable host; the releases there, newest first: " + describe_releases(
            states
        )
    if not any(h.action == SWITCH for h in hosts) and any(h.action == REFUSE for h in hosts):
        refused = "; ".join(f"{h.host}: {h.reason}" for h in hosts if h.action == REFUSE)
        return f"no host can be switched to {target} ({refused})"
    return ""


def _rollback_warnings(states: Mapping[str, HostState], target: str) -> list[str]:
    warnings = []
    marks = bad_marks(states)
    if target in marks:
        warnings.append(f"release {target} is marked bad ({marks[target].get('why') or 'no reason given'})")
    if len(split_of(states)) > 1:
        warnings.append(f"hosts were on different releases ({describe_split(states)})")
    return warnings


def _left_behind(states: Mapping[str, HostState], target: str) -> str | None:
    """The release this rollback leaves (marked bad), unless it goes forward to a newer release."""
    target_info = release_anywhere(states, target)
    for release, _count in split_of(states).most_common():
        if release == target:
            continue
        info = release_anywhere(states, release)
        if target_info is None or info is None or info.order_key > target_info.order_key:
            return release
    return None


def _rollback_schema(
    states: Mapping[str, HostState],
    target: str,
    recorded: SchemaRecord | None,
    force: bool,
    rollback_migrations: bool,
) -> tuple[str, list[str], SchemaRecord | None, str]:
    """(refusal, warnings, schema recorded afterwards, migration to run) for going back to `target`."""
    manifest = manifest_of(release_anywhere(states, target))
    problem = schema_problem(target, manifest, recorded)
    if not problem:
        return "", [], recorded, ""
    if rollback_migrations and manifest is not None:
        new_schema = SchemaRecord(manifest.schema_version, manifest.min_schema, target)
        return "", [problem + "; running rollback_migrations first"], new_schema, "rollback_migrations"
    if force:
        return "", [problem + "; rolling back anyway (--force)"], recorded, ""
    refusal = problem + (
        "; configure rollback_migrations to take the database back first, or use --force if it is compatible"
    )
    return refusal, [], recorded, ""
