"""Host states and fleets for the planner's tests (pure data, no SSH)."""

from __future__ import annotations

import dataclasses

from hypothesis import strategies as st

from deployer.state import HostState, ReleaseInfo

D = "/srv/app"
RELEASES = ["r0", "r1", "r2", "r3"]
SWITCH_TIMES = ["", "2026-12-01T01:00:00Z", "2026-12-01T02:00:00Z", "2026-12-01T03:00:00Z"]
PIN = {"release": "r1", "user": "ana", "time": "2026-11-22T03:00:00Z", "why": "checkout broken"}


def host(name, current, previous="", releases=("r1", "r2", "r3"), last_op=None, kind=None, statuses=None):
    statuses = statuses or {}
    infos = {r: ReleaseInfo(r, statuses.get(r, "ok"), f"digest-{r}") for r in releases}
    return HostState(
        host=name,
        deploy_to_exists=True,
        current_kind=kind or ("link" if current else "missing"),
        current_link=f"releases/{current}" if current else "",
        current=current,
        previous_version_raw=(f"{D}/releases/{previous}" if previous and "/" not in previous else previous)
        if current
        else None,
        releases=infos,
        last_op=last_op,
        current_problem="/srv/app/current is not a symlink" if kind == "notlink" else "",
    )


def fleet(*hosts):
    return {h.host: h for h in hosts}


def actions(plan):
    return {h.host: h.action for h in plan.hosts}


@st.composite
def fleets(draw):
    count = draw(st.integers(1, 6))
    states = {}
    for i in range(count):
        current = draw(st.sampled_from([None, *RELEASES]))
        previous = draw(st.sampled_from(["", *RELEASES, "/etc", "../x"]))
        present = draw(st.sets(st.sampled_from(RELEASES)))
        if current:
            present.add(current)
        op = draw(st.sampled_from([None, "rollback", "deploy", "revert"]))
        when = draw(st.sampled_from(SWITCH_TIMES))
        last = None if op is None else {"op": op, "to": current, "time": when}
        states[f"h{i}"] = host(f"h{i}", current, previous, releases=tuple(sorted(present)), last_op=last)
    down = {f"d{i}": "refused" for i in range(draw(st.integers(0, 2)))}
    return states, down


def with_(state, **changes):
    return dataclasses.replace(state, **changes)


def bad(state, release, why="rolled back"):
    releases = dict(state.releases)
    releases[release] = dataclasses.replace(releases[release], bad={"why": why, "user": "ana", "time": "t"})
    return with_(state, releases=releases)
