"""Planning: pure functions from (inventory, intent, host states) to what each host will do.

No I/O happens here. This is where a deploy decides who stages and who switches, and where a
rollback decides its target for the whole fleet before anything changes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from deployer.state import HostState

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

    def acting(self) -> list[HostPlan]:
        return [host for host in self.hosts if host.changes]

    def with_action(self, *actions: str) -> list[HostPlan]:
        return [host for host in self.hosts if host.action in actions]


def _release_path(deploy_to: str, release_id: str) -> str:
    return f"{deploy_to}/releases/{release_id}"


def plan_deploy(
    deploy_to: str,
    states: Mapping[str, HostState],
    unreachable: Mapping[str, str],
    release_id: str,
    digest: str,
) -> Plan:
    """Plan a deploy of `release_id` (artifact `digest`): every host must be able to take it."""
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
            previous = _release_path(deploy_to, before) if before else ""
            common = {"expected_link": state.current_link, "previous_version": previous}
            if existing is not None:
                hosts.append(HostPlan(name, SWITCH, before, release_id, "already staged", **common))
            else:
                source = CACHE if digest in state.cached_digests else UPLOAD
                hosts.append(HostPlan(name, STAGE, before, release_id, source=source, **common))
    hosts.sort(key=lambda plan: plan.host)
    blocked = [host for host in hosts if host.action in (REFUSE, UNREACHABLE)]
    refusal = ""
    if blocked:
        names = ", ".join(host.host for host in blocked)
        refusal = f"no host was changed: every host must be able to take the release, and {names} cannot"
    return Plan("deploy", release_id, tuple(hosts), refusal)


def _rolled_back_to(state: HostState) -> str | None:
    """The release this host was rolled back to by the last operation, if it is still on it."""
    last = state.last_op
    if last and last.get("op") == "rollback" and isinstance(last.get("to"), str) and last["to"] == state.current:
        return state.current
    return None


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
    pending = {target for state in states.values() if (target := _rolled_back_to(state))}
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
        if previous_by_current[first] == {second}:
            current = first
        elif previous_by_current[second] == {first}:
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
    return next(iter(previous_set)), ""


def plan_rollback(
    deploy_to: str,
    states: Mapping[str, HostState],
    unreachable: Mapping[str, str],
    to: str | None = None,
) -> Plan:
    """Plan a rollback to `to`, or to the fleet's previous release; decided once for all hosts."""
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
    return Plan("rollback", target, tuple(hosts))
