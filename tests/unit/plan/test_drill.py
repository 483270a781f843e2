"""How a drill is decided (deployer/plan/drill.py), before anything changes."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from deployer import plan as p
from deployer.state import ReleaseInfo
from tests.unit.plan.helpers import PIN, D, bad, fleet, host, with_

# --- the drill is decided up front, in the planner ---

NOW = datetime(2026, 12, 2, 3, 0, tzinfo=timezone.utc)


def drill_fleet(current="r2", previous="r1", **changes):
    return fleet(*(with_(host(name, current, previous), **changes) for name in ("a", "b")))


@pytest.mark.parametrize(
    ("states", "unreachable", "digest", "expected"),
    [
        # a new artifact: deploy a fresh release, roll back to where the fleet is, deploy again
        (drill_fleet(), {}, "digest-new", ("r2", "20261202T030000Z-digest-n", "r2", False, "")),
        # the artifact is already live (a CI job retried): live -> its previous -> live
        (drill_fleet(), {}, "digest-r2", ("r2", "r2", "r1", True, "")),
        # live, and its previous is marked bad: the drill skips it like a rollback would (none left here)
        (
            {n: bad(s, "r1") for n, s in drill_fleet().items()},
            {},
            "digest-r2",
            ("r2", "r2", "", True, "already live (release r2) and there is no earlier release"),
        ),
        # live with no previous release: refused, nothing changes
        (drill_fleet(previous=""), {}, "digest-r2", ("r2", "r2", "", True, "no earlier release to drill back to")),
        (drill_fleet(), {"c": "refused"}, "digest-new", (None, "", "", False, "unreachable: c")),
        (fleet(host("a", "r2", "r1"), host("b", "r1")), {}, "d", (None, "", "", False, "hosts differ: a=r2, b=r1")),
        (fleet(host("a", "r2", "r1"), host("b", None)), {}, "d", (None, "", "", False, "b have none")),
        (drill_fleet(pin=PIN), {}, "digest-new", ("r2", "", "", False, "pinned to r1 by ana")),
    ],
    ids=[
        "new-artifact",
        "live-artifact",
        "live-previous-bad",
        "live-no-previous",
        "unreachable",
        "split",
        "empty",
        "pinned",
    ],
)
def test_drill_plans(states, unreachable, digest, expected):
    plan = p.plan_drill(D, states, unreachable, digest, NOW)
    baseline, release_id, rollback_to, live, refusal = expected
    assert (plan.baseline, plan.live) == (baseline, live)
    if refusal:
        assert refusal in plan.refusal
        return
    assert not plan.refusal
    assert plan.release_id.startswith(release_id) and plan.rollback_to == rollback_to
    assert plan.rollback_to != plan.release_id  # the drill always switches for real


def test_live_drill_never_goes_further_back_than_the_live_previous():
    # r3 is live, r2 before it, r1 before that: a retried drill of r3 goes to r2 and back, never to r1.
    states = fleet(
        *(
            with_(
                host(n, "r3", "r2"),
                releases={
                    "r1": ReleaseInfo("r1", "ok", "digest-r1"),
                    "r2": ReleaseInfo("r2", "ok", "digest-r2", previous="r1"),
                    "r3": ReleaseInfo("r3", "ok", "digest-r3", previous="r2"),
                },
            )
            for n in ("a", "b")
        )
    )
    plan = p.plan_drill(D, states, {}, "digest-r3", NOW)
    assert (plan.release_id, plan.rollback_to, plan.live) == ("r3", "r2", True)
