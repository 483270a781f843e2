"""The fleet's history is ordered by what the hosts saw, not by the clocks of the controllers that
wrote it (a controller restored from a snapshot writes an earlier time on a later switch)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st

from deployer.operations.views import history_entries, in_host_order
from deployer.state import HostState


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[int], list[list[int]], dict[int, str]]:
    """What happened (events 0..n-1 in order), what each host saw of it, and the time each event's
    controller wrote (any clock: behind, ahead, equal)."""
    count = draw(st.integers(1, 12))
    hosts = draw(st.integers(1, 4))
    seen = [sorted(draw(st.sets(st.integers(0, count - 1), min_size=1))) for _ in range(hosts)]
    events = sorted({event for chain in seen for event in chain})
    times = {event: f"2026-12-{draw(st.integers(1, 9)):02d}" for event in events}
    return events, seen, times


@given(fleets())
def test_every_hosts_own_order_is_kept_whatever_the_clocks_said(fleet):
    events, chains, times = fleet
    order = in_host_order(chains, times.__getitem__)
    assert sorted(order) == events  # every event once
    for chain in chains:
        assert [event for event in order if event in chain] == chain


@given(fleets())
def test_with_clocks_that_agree_it_is_the_order_things_happened_in(fleet):
    events, chains, _ = fleet
    assert in_host_order(chains, lambda event: f"{event:04d}") == events


def test_hosts_that_disagree_still_list_every_event_once():
    assert in_host_order([["a", "b"], ["b", "a"]], {"a": "1", "b": "2"}.__getitem__) == ["a", "b"]


def test_a_deploy_from_a_controller_two_days_behind_is_listed_newest():
    def line(run: str, op: str, to: str, time: str) -> dict[str, Any]:
        return {"op": op, "from": "", "to": to, "run": run, "time": time, "result": "ok", "user": "ci"}

    history = (
        line("r1", "deploy", "A", "2026-12-04T10:00:00Z"),
        line("r2", "deploy", "B", "2026-12-06T10:00:00Z"),
        line("r3", "deploy", "C", "2026-12-04T12:00:00Z"),  # this controller's clock was two days behind
    )
    states = {name: HostState(host=name, deploy_to="/srv/app", history=history) for name in ("web1", "web2")}
    view = cast(Any, SimpleNamespace(states=states))
    entries = history_entries(view, 10)
    assert [entry["to"] for entry in entries] == ["C", "B", "A"]
    assert entries[0]["time"] == "2026-12-04T12:00:00Z"  # the time shown is still the one written
    assert entries[0]["hosts"] == ["web1", "web2"]
