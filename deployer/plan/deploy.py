"""How a deploy is decided: its release id, who stages and who switches, its guards, and the revert
plan of a failed rollout."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from deployer.invocation import command
from deployer.plan.facts import (
    SCHEMA_SPLIT_HINT,
    bad_marks,
    describe_pin,
    describe_split,
    digest_of,
    fleet_pin,
    fleet_schema,
    release_anywhere,
    schema_disagreement,
    schema_problem,
    split_of,
)
from deployer.plan.model import (
    CACHE,
    FETCH,
    KEEP,
    REFUSE,
    STAGE,
    SWITCH,
    UNREACHABLE,
    UPLOAD,
    HostPlan,
    Plan,
    held_back,
)
from deployer.plan.prune import prune_list
from deployer.release import Manifest, new_release_id
from deployer.state import STATUS_OK, HostState, SchemaRecord


def batches(hosts: Sequence[str], size: int) -> list[list[str]]:
    """Hosts in inventory order, cut into batches of `size` (at least one host each)."""
    size = max(1, size)
    return [list(hosts[index : index + size]) for index in range(0, len(hosts), size)]


def _release_path(deploy_to: str, release_id: str) -> str:
    return f"{deploy_to}/releases/{release_id}"


def choose_release_id(states: Mapping[str, HostState], digest: str, now: datetime, signed_only: bool = False) -> str:
    """The id for deploying artifact `digest`: resume an interrupted deploy of it, reuse a good release
    already staged from it on every host (no second copy), else a fresh fleet-wide id. With
    `signed_only` a release is reused only if every host verified its signature when staging it
    (one staged unsigned is staged again, signed, under a new id)."""
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
            and (info.signer or not signed_only)
            for state in states.values()
        )

    first = next(iter(states.values()), None)
    ready = [info for info in first.releases.values() if good_everywhere(info.release_id)] if first else []
    if ready:
        return max(ready, key=lambda info: info.order_key).release_id
    taken = {release for state in states.values() for release in state.releases}
    return new_release_id(now, digest, taken)


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
    signers: Mapping[str, str] | None = None,
    pull: bool = False,
) -> Plan:
    """Plan a deploy of `release_id` (artifact `digest`): every host must be able to take it.

    Refused as a whole (nothing staged) when a host cannot take it, the fleet is pinned (unless
    `unpin`), hosts are split between releases (unless `force`: the deploy is what they converge
    on), or the release cannot run against the recorded database schema (unless `force`).
    `signers` is, per host, what its own copy of who may sign must be (`host_signers.HostCopy.digests`;
    missing: the host follows no `signatures`). With `pull`, hosts without the artifact cached fetch
    it from its URL themselves instead of receiving it.
    """
    signers = signers or {}
    hosts = [HostPlan(name, UNREACHABLE, None, release_id, reason) for name, reason in unreachable.items()]
    hosts += [
        _deploy_host(name, state, deploy_to, release_id, digest, signers.get(name, ""), pull)
        for name, state in states.items()
    ]
    hosts.sort(key=lambda plan: plan.host)
    recorded = fleet_schema(states)
    guards = [
        _blocked_guard(hosts),
        _pin_guard(states, unpin),
        _split_guard(states, release_id, force),
        ("", _bad_warnings(states, release_id, digest)),
        _schema_split_guard(states, force),
        _schema_guard(release_id, manifest, recorded, force),
    ]
    refusal = next((refused for refused, _warnings in guards if refused), "")
    warnings = tuple(warning for _refused, found in guards for warning in found)
    new_schema, migration = _schema_after(release_id, manifest, recorded)
    prune = {} if refusal else _prune_after(states, hosts, release_id, keep_releases, keep_failed_releases)
    return Plan(
        "deploy",
        release_id,
        held_back(hosts, refusal),
        refusal,
        warnings,
        prune,
        schema=new_schema,
        migration=migration,
        migration_from=recorded.version if recorded else None,
        migration_to=manifest.schema_version if manifest else None,
    )


def _deploy_host(
    name: str, state: HostState, deploy_to: str, release_id: str, digest: str, signers: str = "", pull: bool = False
) -> HostPlan:
    """What one host does in a deploy of `release_id`: stage, switch only, keep, or refuse (and why)."""
    before = state.current
    existing = state.releases.get(release_id)
    if state.signers and state.signers != signers:
        kept = "this host's allowed signers (.deployer/signers)"
        if not signers:
            why = f"{kept} are kept, but the inventory has no `signatures` for it"
        else:
            why = f"{kept} are not the inventory's: changed on this host or in the inventory"
        return HostPlan(name, REFUSE, before, release_id, why + "; `deployer place-signers` makes them the inventory's")
    if state.current_kind == "notlink":
        return HostPlan(name, REFUSE, None, release_id, state.current_problem + "; refusing to replace it")
    if state.current_problem and not state.current_problem.startswith("current is a dangling link"):
        return HostPlan(name, REFUSE, None, release_id, state.current_problem)
    if before == release_id:
        return HostPlan(name, KEEP, before, release_id, "already on this release")
    if existing is not None and not (existing.status == STATUS_OK and existing.digest == digest):
        reason = (
            f"release {release_id} already exists on this host (status {existing.status}, "
            f"digest {existing.digest[:12] or 'unknown'}); release folders are never reused"
        )
        return HostPlan(name, REFUSE, before, release_id, reason)
    previous = _release_path(state.deploy_to or deploy_to, before) if before else ""
    common: dict[str, Any] = {"expected_link": state.current_link, "previous_version": previous}
    if existing is not None:
        return HostPlan(name, SWITCH, before, release_id, "already staged", **common)
    source = CACHE if digest in state.cached_digests else (FETCH if pull else UPLOAD)
    place = bool(signers and not state.signers)
    return HostPlan(name, STAGE, before, release_id, source=source, place_signers=place, **common)


Guard = tuple[str, list[str]]  # (why the deploy is refused, or ""; warnings)


def _blocked_guard(hosts: list[HostPlan]) -> Guard:
    blocked = [host.host for host in hosts if host.action in (REFUSE, UNREACHABLE)]
    if not blocked:
        return "", []
    names = ", ".join(blocked)
    return f"no host was changed: every host must be able to take the release, and {names} cannot", []


def _pin_guard(states: Mapping[str, HostState], unpin: bool) -> Guard:
    pin = fleet_pin(states)
    if pin is None:
        return "", []
    if unpin:
        return "", [f"the fleet was {describe_pin(pin)}; this deploy removes the pin (--unpin)"]
    return (
        f"the fleet is {describe_pin(pin)} after a rollback; run `{command('unpin')}` (or deploy with --unpin) "
        "once the fix is ready, so a pipeline does not re-deploy the broken release"
    ), []


def _split_guard(states: Mapping[str, HostState], release_id: str, force: bool) -> Guard:
    """Hosts on different releases: refused unless resuming this release or `force` (converge)."""
    split = split_of(states)
    others = set(split) - {release_id}
    resuming = release_id in split and len(others) <= 1
    if resuming:
        return "", [f"resuming: {split[release_id]} host(s) are already on {release_id}"] if others else []
    if len(split) <= 1:
        return "", []
    if force:
        return "", [f"hosts were on different releases ({describe_split(states)}); converging on {release_id}"]
    return (
        f"hosts are on different releases ({describe_split(states)}); deploying would hide the split: "
        "roll back with --to, or deploy with --force to converge every host on this release"
    ), []


def _bad_warnings(states: Mapping[str, HostState], release_id: str, digest: str) -> list[str]:
    return [
        f"this artifact is release {bad_id}, marked bad ({info.get('why') or 'no reason given'}, "
        f"by {info.get('user', '?')} at {info.get('time', '?')}); deploying it again"
        for bad_id, info in sorted(bad_marks(states).items())
        if bad_id == release_id or (digest and release_anywhere(states, bad_id) and digest_of(states, bad_id) == digest)
    ]


def _schema_split_guard(states: Mapping[str, HostState], force: bool) -> Guard:
    """Hosts that disagree on the recorded schema: refused (it decides whether `migrate` runs) unless `force`."""
    problem = schema_disagreement(states)
    if not problem:
        return "", []
    if force:
        return "", [problem + "; taking the highest and recording it on every host switched (--force)"]
    return problem + SCHEMA_SPLIT_HINT, []


def _schema_guard(release_id: str, manifest: Manifest | None, recorded: SchemaRecord | None, force: bool) -> Guard:
    problem = schema_problem(release_id, manifest, recorded) if manifest is not None else ""
    if not problem:
        return "", []
    if force:
        return "", [problem + "; deploying anyway (--force)"]
    return problem + "; use --force if the database is compatible anyway", []


def _schema_after(
    release_id: str, manifest: Manifest | None, recorded: SchemaRecord | None
) -> tuple[SchemaRecord | None, str]:
    """The schema the fleet records once this release is live, and whether `migrate` must run first."""
    if manifest is not None and (recorded is None or manifest.schema_version > recorded.version):
        return SchemaRecord(manifest.schema_version, manifest.min_schema, release_id), "migrate"
    return recorded, ""


def _prune_after(
    states: Mapping[str, HostState], hosts: list[HostPlan], release_id: str, keep: int, keep_failed: int
) -> dict[str, tuple[str, ...]]:
    """What each host prunes once the deploy succeeded (never a release any host is on, or was on)."""
    currents = set(split_of(states)) | {release_id}
    prune: dict[str, tuple[str, ...]] = {}
    for host_plan in hosts:
        host_state = states.get(host_plan.host)
        if host_state is None or host_plan.action not in (STAGE, SWITCH, KEEP):
            continue
        protect = currents | ({host_plan.before} if host_plan.before else set())
        prune[host_plan.host] = prune_list(host_state, keep, keep_failed, protect, release_id)
    return prune


def plan_revert(attempted: Sequence[HostPlan], release: str) -> tuple[list[HostPlan], list[str]]:
    """After a failed rollout of `release`: switch every host it touched back to what it had.

    Returns the revert's host plans (each must still find `current` on `release`) and the hosts
    that had no release before (a first deploy: nothing to go back to; they stay and are failed).
    """
    back = [
        HostPlan(h.host, SWITCH, release, h.before, expected_link=f"releases/{release}")
        for h in attempted
        if h.before is not None
    ]
    stuck = [h.host for h in attempted if h.before is None]
    return back, stuck
