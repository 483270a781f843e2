"""A controller whose clock is behind the fleet's (a CI runner restored from a snapshot) still
records a new release after every release the hosts hold, and says its clock is wrong."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from deployer.plan import choose_release_id, fleet_clock
from deployer.state import HostState, ReleaseInfo

NOW = datetime(2026, 12, 6, 7, 0, 0, tzinfo=timezone.utc)


def state(name: str, *staged: str) -> HostState:
    releases = {f"r{index}": ReleaseInfo(f"r{index}", "ok", "d" * 64, at) for index, at in enumerate(staged)}
    return HostState(host=name, deploy_to="/srv/app", releases=releases)


def test_a_clock_in_step_with_the_fleet_records_now_and_says_nothing():
    assert fleet_clock({"web1": state("web1", "2026-12-05T07:00:00.000000Z")}, NOW) == (NOW, "")
    assert fleet_clock({}, NOW) == (NOW, "")


def test_a_clock_two_days_behind_records_after_the_newest_release_and_warns():
    later = "2026-12-08T07:00:00.250000Z"  # staged by a controller whose clock was right
    states = {"web1": state("web1", "2026-12-04T00:00:00Z"), "web2": state("web2", later)}
    at, warning = fleet_clock(states, NOW)
    assert at == datetime(2026, 12, 8, 7, 0, 1, 250000, tzinfo=timezone.utc)
    assert "2.0 days behind the fleet: web2 holds a release staged at 2026-12-08T07:00:00Z" in warning
    new_id = choose_release_id(states, "e" * 64, at)
    assert new_id > "20261208T070000Z"  # its id sorts after the fleet's newest too


def test_seconds_of_drift_move_the_record_but_are_not_worth_a_warning():
    at, warning = fleet_clock({"web1": state("web1", "2026-12-06T07:00:30.000000Z")}, NOW)
    assert at == NOW + timedelta(seconds=31) and warning == ""


def test_unreadable_staging_times_are_ignored():
    assert fleet_clock({"web1": state("web1", "", "yesterday")}, NOW) == (NOW, "")
