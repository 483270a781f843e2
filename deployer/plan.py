"""Planning: pure functions from (inventory, intent, host states) to what each host will do.

No I/O happens here. This is where a deploy decides who stages and who switches, and where a
rollback decides its target for the whole fleet before anything changes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from deployer.release import Manifest, new_release_id
from deployer.state import STATUS_FAILED, STATUS_OK, STATUS_VALIDATING, HostState, ReleaseInfo, SchemaRecord

# Per-host actions.
STAGE = "stage"  # upload (or reuse the cached artifact), unpack, validate, then switch
SWITCH = "switch"  # the release is already staged and valid here: switch only
KEEP = "keep"  # already on the target: nothing to do
REFUSE = "refuse"  # this host will not be touched, with a reason
UNREACHABLE = "unreachable"  # gather failed: the reason is the connection error

UPLOAD = "upload"
CACHE = "cache"


@dataclass(frozen=True)
class HostPlan:
    host: str
    action: str
    before: str | None
    target: str | None
    reason: str = ""
    source: str = ""  # for STAGE: UPLOAD or CACHE
    expected_link: str = ""  # raw `current` link text the switch must still find
    previous_version: str = ""  # for deploys: what the new release's previousVersion will say

    @property
    def changes(self) -> bool:
        return self.action in (STAGE, SWITCH)


@dataclass(frozen=True)
class Plan:
    operation: str
    target: str | None
    hosts: tuple[HostPlan, ...]
    refusal: str = ""  # fleet-level reason nothing will happen; empty when the plan may proceed
    warnings: tuple[str, ...] = ()
    prune: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # host -> releases removed after success
    mark_bad: str | None = None  # the release a rollback leaves, marked bad on every host
    schema: SchemaRecord | None = None  # what the fleet records as its schema once this plan has run
    migration: str = ""  # "migrate" or "rollback_migrations": run once before switching
    migration_from: int | None = None
    migration_to: int | None = None

    def acting(self) -> list[HostPlan]:
        return [host for host in self.hosts if host.changes]

    def with_action(self, *actions: str) -> list[HostPlan]:
        return [host for host in self.hosts if host.action in actions]


def split_of(states: Mapping[str, HostState]) -> Counter[str]:
    """How many hosts are on each release (hosts without a current release are not counted)."""
    return Counter(state.current for state in states.values() if state.current is not None)


def describe_split(states: Mapping[str, HostState]) -> str:
    by_release: dict[str, list[str]] = {}
    for name, state in sorted(states.items()):
        by_release.setdefault(state.current or "(none)", []).append(name)
    return "; ".join(f"{release}: {', '.join(names)}" for release, names in sorted(by_release.items()))


def fleet_pin(states: Mapping[str, HostState]) -> Mapping[str, Any] | None:
    """The pin any host records (they are written together; the first found is shown)."""
    for _name, state in sorted(states.items()):
        if state.pin is not None:
            return state.pin
    return None


def fleet_schema(states: Mapping[str, HostState]) -> SchemaRecord | None:
    """The newest schema any host records: the database is shared, so the highest version wins."""
    records = [state.schema for state in states.values() if state.schema is not None]
    return max(records, key=lambda record: (record.version, record.min_compatible)) if records else None


def bad_marks(states: Mapping[str, HostState]) -> dict[str, Mapping[str, Any]]:
    marks: dict[str, Mapping[str, Any]] = {}
    for state in states.values():
        for release_id, info in state.bad_releases().items():
            marks.setdefault(release_id, info)
    return marks


def describe_pin(pin: Mapping[str, Any]) -> str:
    text = f"pinned to {pin.get('release') or 'an unknown release'}"
    if pin.get("user"):
        text += f" by {pin['user']}"
    if pin.get("time"):
        text += f" at {pin['time']}"
    if pin.get("why"):
        text += f" ({pin['why']})"
    return text


def schema_problem(release_id: str, manifest: Manifest | None, recorded: SchemaRecord | None) -> str:
    """Why `release_id` cannot run against the recorded database schema; "" when it can (or nothing is known)."""
    if recorded is None:
        return ""
    if manifest is None:
        if recorded.min_compatible <= 0:
            return ""
        return (
            f"release {release_id} declares no schema_version, and the database is at schema {recorded.version} "
            f"(compatible down to {recorded.min_compatible}, recorded by {recorded.release or 'an earlier release'})"
        )
    if manifest.schema_version < recorded.min_compatible:
        return (
            f"release {release_id} is written for schema {manifest.schema_version}, but the database is at "
            f"schema {recorded.version}, which is compatible only down to {recorded.min_compatible} "
            f"(recorded by {recorded.release or 'an earlier release'})"
        )
    return ""


def manifest_of(info: ReleaseInfo | None) -> Manifest | None:
    if info is None or info.schema is None:
        return None
    return Manifest(info.schema, info.min_schema if info.min_schema is not None else info.schema)


def _release_anywhere(states: Mapping[str, HostState], release_id: str) -> ReleaseInfo | None:
    for _name, state in sorted(states.items()):
        info = state.releases.get(release_id)
        if info is not None:
            return info
    return None


def prune_list(
    state: HostState,
    keep: int,
    keep_failed: int,
    protected: Iterable[str],
    incoming: str | None = None,
) -> tuple[str, ...]:
    """Releases to remove on one host, oldest first.

    Kept: the `keep` newest good releases and the `keep_failed` newest bad or failed ones (in
    deployment order from the recorded staging time and the ids, never file times), every
    protected release (current, its previousVersion, the pin, any release a host of the fleet is
    on, the release being deployed), and folders the tool did not make. `incoming` is a release
    about to be staged here: it counts as the newest good one.
    """
    protect = set(protected)
    good: list[ReleaseInfo] = []
    spoiled: list[ReleaseInfo] = []
    for info in state.releases.values():
        if info.status in (STATUS_FAILED, STATUS_VALIDATING) or (info.status == STATUS_OK and info.bad is not None):
            spoiled.append(info)
        elif info.status == STATUS_OK:
            good.append(info)
    good.sort(key=lambda info: info.order_key, reverse=True)
    spoiled.sort(key=lambda info: info.order_key, reverse=True)
    keep_good = keep - 1 if incoming is not None and incoming not in state.releases else keep
    doomed = [info for info in good[max(0, keep_good) :] + spoiled[keep_failed:] if info.release_id not in protect]
    doomed.sort(key=lambda info: info.order_key)
    return tuple(info.release_id for info in doomed)


def protected_releases(state: HostState, deploy_to: str, fleet_currents: Iterable[str], pin: str | None) -> set[str]:
    protect = set(fleet_currents)
    if state.current:
        protect.add(state.current)
        previous, _problem = state.previous_version(deploy_to)
        if previous:
            protect.add(previous)
    if pin:
        protect.add(pin)
    return protect


def plan_prune(
    deploy_to: str, states: Mapping[str, HostState], keep: int, keep_failed: int
) -> dict[str, tuple[str, ...]]:
    """What `inv prune` removes on each host."""
    currents = set(split_of(states))
    pin = fleet_pin(states)
    pinned = str(pin["release"]) if pin and pin.get("release") else None
    return {
        name: prune_list(state, keep, keep_failed, protected_releases(state, deploy_to, currents, pinned))
        for name, state in states.items()
    }


def batches(hosts: Sequence[str], size: int) -> list[list[str]]:
    """Hosts in inventory order, cut into batches of `size` (at least one host each)."""
    size = max(1, size)
    return [list(hosts[index : index + size]) for index in range(0, len(hosts), size)]


def _release_path(deploy_to: str, release_id: str) -> str:
    return f"{deploy_to}/releases/{release_id}"


def choose_release_id(states: Mapping[str, HostState], digest: str, now: datetime) -> str:
    """The id for deploying artifact `digest`: resume an interrupted deploy of it, reuse a good release
    already staged from it on every host (no second copy), else a fresh fleet-wide id."""
    current_with_digest = {
        state.current
        for state in states.values()
        if state.current is not None
        and (info := state.releases.get(state.current)) is not None
        and info.digest == digest
        and info.bad is None
    }
    if len(current_with_digest) == 1:
        return next(iter(current_with_digest))

    def good_everywhere(release_id: str) -> bool:
        return all(
            (info := state.releases.get(release_id)) is not None
            and info.status == STATUS_OK
            and info.digest == digest
            and info.bad is None
            for state in states.values()
        )

    first = next(iter(states.values()), None)
    ready = [info for info in first.releases.values() if good_everywhere(info.release_id)] if first else []
    if ready:
        return max(ready, key=lambda info: info.order_key).release_id
    taken = {release for state in states.values() for release in state.releases}
    return new_release_id(now, digest, taken)


def describe_releases(states: Mapping[str, HostState], limit: int = 10) -> str:
    """The releases present on the fleet, newest first, with when they were staged and on how many hosts."""
    seen: dict[str, tuple[ReleaseInfo, int]] = {}
    for state in states.values():
        for release_id, info in state.releases.items():
            known, count = seen.get(release_id, (info, 0))
            seen[release_id] = (known, count + 1)
    if not seen:
        return "no host has any release"
    ordered = sorted(seen.values(), key=lambda item: item[0].order_key, reverse=True)
    parts = []
    for info, count in ordered[:limit]:
        staged = f"staged {info.staged_at[:19].replace('T', ' ')}" if info.staged_at else "not staged by this tool"
        marks = [staged, f"on {count}/{len(states)} hosts"]
        if info.bad is not None:
            marks.append("BAD")
        if any(state.current == info.release_id for state in states.values()):
            marks.append("CURRENT")
        parts.append(f"{info.release_id} ({', '.join(marks)})")
    more = f", and {len(ordered) - limit} older" if len(ordered) > limit else ""
    return "; ".join(parts) + more


def plan_deploy(
    deploy_to: str,
    states: Mapping[str, HostState],
    unreachable: Mapping[str, str],
    release_id: str,
    digest: str,
    *,
    force: bool = False,
    unpin: bool = False,
    manifest: Manifest | None = None,
    keep_releases: int = 5,
    keep_failed_releases: int = 3,
) -> Plan:
    """Plan a deploy of `release_id` (artifact `digest`): every host must be able to take it.

    Refused as a whole (nothing staged) when a host cannot take it, the fleet is pinned (unless
    `unpin`), hosts are split between releases (unless `force`: the deploy is what they converge
    on), or the release cannot run against the recorded database schema (unless `force`).
    """
    hosts: list[HostPlan] = []
    for name, reason in unreachable.items():
        hosts.append(HostPlan(name, UNREACHABLE, None, release_id, reason))
    for name, state in states.items():
        before = state.current
        existing = state.releases.get(release_id)
        if state.current_kind == "notlink":
            hosts.append(HostPlan(name, REFUSE, None, release_id, state.current_problem + "; refusing to replace it"))
        elif state.current_problem and not state.current_problem.startswith("current is a dangling link"):
            hosts.append(HostPlan(name, REFUSE, None, release_id, state.current_problem))
        elif before == release_id:
            hosts.append(HostPlan(name, KEEP, before, release_id, "already on this release"))
        elif existing is not None and not (existing.status == "ok" and existing.digest == digest):
            reason = (
                f"release {release_id} already exists on this host (status {existing.status}, "
                f"digest {existing.digest[:12] or 'unknown'}); release folders are never reused"
            )
            hosts.append(HostPlan(name, REFUSE, before, release_id, reason))
        else:
            previous = _release_path(state.deploy_to or deploy_to, before) if before else ""
            common = {"expected_link": state.current_link, "previous_version": previous}
            if existing is not None:
                hosts.append(HostPlan(name, SWITCH, before, release_id, "already staged", **common))
            else:
                source = CACHE if digest in state.cached_digests else UPLOAD
                hosts.append(HostPlan(name, STAGE, before, release_id, source=source, **common))
    hosts.sort(key=lambda plan: plan.host)
    blocked = [host for host in hosts if host.action in (REFUSE, UNREACHABLE)]
    refusal = ""
    warnings: list[str] = []
    if blocked:
        names = ", ".join(host.host for host in blocked)
        refusal = f"no host was changed: every host must be able to take the release, and {names} cannot"

    pin = fleet_pin(states)
    if pin is not None:
        if unpin:
            warnings.append(f"the fleet was {describe_pin(pin)}; this deploy removes the pin (--unpin)")
        elif not refusal:
            refusal = (
                f"the fleet is {describe_pin(pin)} after a rollback; run `inv unpin` (or deploy with --unpin) "
                "once the fix is ready, so a pipeline does not re-deploy the broken release"
            )

    split = split_of(states)
    others = set(split) - {release_id}
    resuming = release_id in split and len(others) <= 1
    if len(split) > 1 and not resuming:
        if force:
            warnings.append(f"hosts were on different releases ({describe_split(states)}); converging on {release_id}")
        elif not refusal:
            refusal = (
                f"hosts are on different releases ({describe_split(states)}); deploying would hide the split: "
                "roll back with --to, or deploy with --force to converge every host on this release"
            )
    elif resuming and others:
        warnings.append(f"resuming: {split[release_id]} host(s) are already on {release_id}")

    for bad_id, info in sorted(bad_marks(states).items()):
        if bad_id == release_id or (
            digest and _release_anywhere(states, bad_id) and _digest_of(states, bad_id) == digest
        ):
            warnings.append(
                f"this artifact is release {bad_id}, marked bad ({info.get('why') or 'no reason given'}, "
                f"by {info.get('user', '?')} at {info.get('time', '?')}); deploying it again"
            )

    recorded = fleet_schema(states)
    problem = schema_problem(release_id, manifest, recorded) if manifest is not None else ""
    if problem:
        if force:
            warnings.append(problem + "; deploying anyway (--force)")
        elif not refusal:
            refusal = problem + "; use --force if the database is compatible anyway"
    new_schema = recorded
    migration = ""
    if manifest is not None and (recorded is None or manifest.schema_version > recorded.version):
        new_schema = SchemaRecord(manifest.schema_version, manifest.min_schema, release_id)
        migration = "migrate"
    elif manifest is not None and recorded is not None and manifest.schema_version == recorded.version:
        new_schema = recorded

    prune: dict[str, tuple[str, ...]] = {}
    if not refusal:
        currents = set(split) | {release_id}
        for host_plan in hosts:
            host_state = states.get(host_plan.host)
            if host_state is None or host_plan.action not in (STAGE, SWITCH, KEEP):
                continue
            protect = set(currents)
            if host_plan.before:
                protect.add(host_plan.before)
            prune[host_plan.host] = prune_list(host_state, keep_releases, keep_failed_releases, protect, release_id)
    return Plan(
        "deploy",
        release_id,
        _held_back(hosts, refusal),
        refusal,
        tuple(warnings),
        prune,
        schema=new_schema,
        migration=migration,
        migration_from=recorded.version if recorded else None,
        migration_to=manifest.schema_version if manifest else None,
    )


def _held_back(hosts: list[HostPlan], refusal: str) -> tuple[HostPlan, ...]:
    """When the fleet-level plan is refused, no host acts: acting hosts become KEEP, saying why."""
    if not refusal:
        return tuple(hosts)
    return tuple(
        HostPlan(h.host, KEEP, h.before, h.target, "not changed: the operation was refused") if h.changes else h
        for h in hosts
    )


def _digest_of(states: Mapping[str, HostState], release_id: str) -> str:
    info = _release_anywhere(states, release_id)
    return info.digest if info else ""


def _rolled_back_to(state: HostState) -> str | None:
    """The release this host was rolled back to by the last operation, if it is still on it."""
    last = state.last_op
    if last and last.get("op") == "rollback" and isinstance(last.get("to"), str) and last["to"] == state.current:
        return state.current
    return None


def _latest_rollback_targets(states: Mapping[str, HostState]) -> set[str]:
    """Where the most recent rollback (by the controller's time it records) sent its hosts.

    A host still on the target of an older, finished rollback is not part of an unfinished one.
    More than one target means rollbacks that cannot be ordered: the caller refuses.
    """
    latest: dict[str, set[str]] = {}
    for state in states.values():
        target = _rolled_back_to(state)
        if target is not None and state.last_op is not None:
            latest.setdefault(str(state.last_op.get("time") or ""), set()).add(target)
    return latest[max(latest)] if latest else set()


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
) -> Plan:
    """Plan a rollback to `to`, or to the fleet's previous release; decided once for all hosts.

    The release left behind is marked bad; the target's declared schema is checked against the
    recorded one (refused unless `force`, or `rollback_migrations` can take the database back).
    """
    target, why = (to, "") if to is not None else choose_rollback_target(deploy_to, states, not unreachable)
    if target is None:
        untouched = [HostPlan(name, KEEP, state.current, None) for name, state in states.items()]
        untouched += [HostPlan(name, UNREACHABLE, None, None, reason) for name, reason in unreachable.items()]
        return Plan("rollback", None, tuple(sorted(untouched, key=lambda h: h.host)), why)

    hosts: list[HostPlan] = [HostPlan(name, UNREACHABLE, None, target, reason) for name, reason in unreachable.items()]
    for name, state in states.items():
        before = state.current
        release = state.releases.get(target)
        _previous, previous_problem = state.previous_version(deploy_to)
        if before == target:
            hosts.append(HostPlan(name, KEEP, before, target, "already on the target"))
        elif state.current_kind == "notlink":
            hosts.append(HostPlan(name, REFUSE, before, target, state.current_problem + "; refusing to replace it"))
        elif to is None and previous_problem:
            hosts.append(HostPlan(name, REFUSE, before, target, previous_problem + "; host left untouched"))
        elif release is None:
            hosts.append(HostPlan(name, REFUSE, before, target, f"release {target} is not present on this host"))
        elif not release.usable:
            hosts.append(HostPlan(name, REFUSE, before, target, f"release {target} is marked {release.status} here"))
        else:
            hosts.append(HostPlan(name, SWITCH, before, target, expected_link=state.current_link))
    hosts.sort(key=lambda plan: plan.host)

    warnings: list[str] = []
    refusal = ""
    if to is not None and _release_anywhere(states, to) is None:
        refusal = f"release {to} is not on any reachable host; the releases there, newest first: " + describe_releases(
            states
        )
    elif not any(h.action == SWITCH for h in hosts) and any(h.action == REFUSE for h in hosts):
        refused = "; ".join(f"{h.host}: {h.reason}" for h in hosts if h.action == REFUSE)
        refusal = f"no host can be switched to {target} ({refused})"
    marks = bad_marks(states)
    if target in marks:
        warnings.append(f"release {target} is marked bad ({marks[target].get('why') or 'no reason given'})")
    split = split_of(states)
    if len(split) > 1:
        warnings.append(f"hosts were on different releases ({describe_split(states)})")
    # The release left behind is marked bad, unless this "rollback" goes forward to a newer release.
    target_info = _release_anywhere(states, target)
    leaving = [
        release
        for release, _count in split.most_common()
        if release != target
        and (
            target_info is None
            or (info := _release_anywhere(states, release)) is None
            or info.order_key > target_info.order_key
        )
    ]
    recorded = fleet_schema(states)
    new_schema = recorded
    migration = ""
    problem = schema_problem(target, manifest_of(_release_anywhere(states, target)), recorded)
    if problem:
        manifest = manifest_of(_release_anywhere(states, target))
        if rollback_migrations and manifest is not None:
            migration = "rollback_migrations"
            new_schema = SchemaRecord(manifest.schema_version, manifest.min_schema, target)
            warnings.append(problem + "; running rollback_migrations first")
        elif force:
            warnings.append(problem + "; rolling back anyway (--force)")
        else:
            refusal = refusal or problem + (
                "; configure rollback_migrations to take the database back first, or use --force if it is compatible"
            )
    return Plan(
        "rollback",
        target,
        _held_back(hosts, refusal),
        refusal,
        tuple(warnings),
        mark_bad=leaving[0] if leaving and not refusal else None,
        schema=new_schema,
        migration=migration,
        migration_from=recorded.version if recorded else None,
        migration_to=new_schema.version if migration and new_schema else None,
    )


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
    deploy_to: str, states: Mapping[str, HostState], unreachable: Mapping[str, str], digest: str, now: datetime
) -> DrillPlan:
    """Decide a drill before anything changes (its preconditions, its releases, where it goes back to).

    Refused (nothing changed) unless every host is reachable, on one release, and not pinned.
    When the artifact is what the fleet already runs (a CI job retried), the drill exercises that
    release's own previousVersion and comes back; it never goes further back than that.
    """
    if unreachable:
        return DrillPlan(None, "", "", refusal=f"unreachable: {', '.join(sorted(unreachable))}")
    without_release = sorted(name for name, state in states.items() if state.current is None)
    if without_release:
        return DrillPlan(
            None,
            "",
            "",
            refusal=f"the drill needs a baseline release on every host, and {', '.join(without_release)} "
            "have none: run `inv deploy` once with the current version first",
        )
    baselines = {state.current for state in states.values()}
    if len(baselines) != 1:
        split = ", ".join(f"{name}={state.current}" for name, state in sorted(states.items()))
        return DrillPlan(None, "", "", refusal=f"the drill needs the whole fleet on one release; hosts differ: {split}")
    (baseline,) = baselines
    assert baseline is not None
    pin = fleet_pin(states)
    if pin is not None:
        return DrillPlan(
            baseline,
            "",
            "",
            refusal=f"the fleet is {describe_pin(pin)}: a drill would deploy over an incident's rollback; "
            "run `inv unpin` first if the incident is over",
        )
    live = all(
        (info := state.releases.get(baseline)) is not None and info.digest == digest for state in states.values()
    )
    if not live:
        return DrillPlan(baseline, choose_release_id(states, digest, now), baseline)
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
