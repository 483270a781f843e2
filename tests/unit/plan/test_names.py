"""Names people give releases (`rollback --to`): a release id, a version label or a commit prefix.

A table of cases; an ambiguous or unknown name is refused with the candidates listed."""

from __future__ import annotations

import dataclasses

import pytest

from deployer import plan as planning
from deployer.plan.names import resolve_release
from tests.unit.plan.helpers import D, fleet, host

C1 = "1a2b3c4d" + "0" * 32
C2 = "1a2b3c4e" + "1" * 32
C3 = "9f8e7d6c" + "2" * 32
REVISIONS = {"r1": ("1.0.0", C1), "r2": ("1.1.0", C2), "r3": ("1.1.0", C3)}


def with_revisions(state, revisions=REVISIONS):
    releases = {
        rid: dataclasses.replace(info, version=revisions.get(rid, ("", ""))[0], commit=revisions.get(rid, ("", ""))[1])
        for rid, info in state.releases.items()
    }
    return dataclasses.replace(state, releases=releases)


FLEET = fleet(with_revisions(host("web1", "r3", "r2")), with_revisions(host("web2", "r3", "r2")))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("r2", "r2"),  # a release id
        ("1.0.0", "r1"),  # a version label naming one release
        ("1a2b3c4d", "r1"),  # a commit prefix
        ("1A2B3C4D0", "r1"),  # any case
        (C3, "r3"),  # the full commit
        ("9f8e7d6", "r3"),  # seven hex digits are enough
    ],
)
def test_a_name_means_one_release(name, expected):
    assert resolve_release(name, FLEET) == (expected, "")


@pytest.mark.parametrize(
    "name, words",
    [
        ("1.1.0", ["version 1.1.0 names 2 releases", "r2 (1.1.0 (1a2b3c4e))", "r3 (1.1.0 (9f8e7d6c))", "release id"]),
        ("1a2b3c4", ["commit prefix 1a2b3c4 names 2 releases", "r1", "r2"]),
        ("2.0.0", ["release 2.0.0 is not on any reachable host", "Newest first: 1.1.0 (9f8e7d6c) = r3 (current), "]),
        ("1.1.O", ["not on any reachable host", "did you mean 1.1.0?", "1.0.0 (1a2b3c4d) = r1."]),
        ("1a2b", ["not on any reachable host", "at least 7 hex digits"]),
        ("deadbeef", ["release deadbeef is not on any reachable host"]),
    ],
)
def test_an_ambiguous_or_unknown_name_is_refused_with_the_candidates(name, words):
    target, why = resolve_release(name, FLEET)
    assert target is None
    for word in words:
        assert word in why, why


def test_a_release_id_wins_over_a_version_that_looks_the_same():
    odd = {"r1": ("r2", C1)}  # someone labelled r1 "r2"
    states = fleet(with_revisions(host("web1", "r3", "r2"), odd))
    assert resolve_release("r2", states) == ("r2", "")


def test_rollback_to_a_version_plans_that_release_and_records_nothing_when_refused():
    plan = planning.plan_rollback(D, FLEET, {}, "1.0.0")
    assert plan.target == "r1" and not plan.refusal
    assert {h.action for h in plan.hosts} == {planning.SWITCH}
    refused = planning.plan_rollback(D, FLEET, {}, "1.1.0")
    assert refused.target is None and "names 2 releases" in refused.refusal
    assert refused.mark_bad is None and refused.schema is None
    assert {h.action for h in refused.hosts} == {planning.KEEP}


def test_releases_without_revisions_are_named_by_id_only():
    states = fleet(host("web1", "r3", "r2"))
    assert resolve_release("r1", states) == ("r1", "")
    assert resolve_release("1.0.0", states)[0] is None


@pytest.mark.parametrize(
    "pin, words",
    [
        (
            {"release": "r1", "user": "ana", "version": "v1.4.2", "commit": C1},
            "pinned to r1, tracking commit 1a2b3c4d (v1.4.2) by ana",
        ),
        ({"release": "r1", "user": "ana", "version": "v1.4.2"}, "pinned to r1, tracking version v1.4.2 by ana"),
        ({"release": "r1", "user": "ana"}, "pinned to r1 by ana"),
    ],
)
def test_a_pin_says_which_commit_the_fleet_tracks(pin, words):
    assert planning.describe_pin(pin).startswith(words)
