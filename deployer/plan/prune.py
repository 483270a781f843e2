"""Which old releases go: never current, its previous, the pin, or any release a host is on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from deployer.plan.facts import fleet_pin, split_of
from deployer.state import STATUS_FAILED, STATUS_OK, STATUS_VALIDATING, HostState, ReleaseInfo


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
