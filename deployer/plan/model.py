"""What a plan is: per-host actions (stage, switch, keep, refuse, unreachable) and the fleet-level plan."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from deployer.state import SchemaRecord

STAGE = "stage"  # upload (or reuse the cached artifact), unpack, validate, then switch
SWITCH = "switch"  # the release is already staged and valid here: switch only
KEEP = "keep"  # already on the target: nothing to do
REFUSE = "refuse"  # this host will not be touched, with a reason
UNREACHABLE = "unreachable"  # gather failed: the reason is the connection error

UPLOAD = "upload"
CACHE = "cache"
FETCH = "fetch"  # the host fetches the artifact from its URL itself (a pull deploy)


@dataclass(frozen=True)
class HostPlan:
    host: str
    action: str
    before: str | None
    target: str | None
    reason: str = ""
    source: str = ""  # for STAGE: UPLOAD, FETCH or CACHE
    expected_link: str = ""  # raw `current` link text the switch must still find
    previous_version: str = ""  # for deploys: what the new release's previousVersion will say
    place_signers: bool = False  # for STAGE: the host has no copy of who may sign yet; staging places it

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


REFUSED_REASON = "not changed: the operation was refused"


def held_back(hosts: list[HostPlan], refusal: str) -> tuple[HostPlan, ...]:
    """When the fleet-level plan is refused, no host acts: acting hosts become KEEP, saying why."""
    if not refusal:
        return tuple(hosts)
    return tuple(HostPlan(h.host, KEEP, h.before, h.target, REFUSED_REASON) if h.changes else h for h in hosts)
