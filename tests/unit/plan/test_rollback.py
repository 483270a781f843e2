"""Where the rollback target is decided (deployer/plan/rollback.py): hundreds of fleet states, no SSH."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployer import plan as p
from deployer.state import ReleaseInfo, SchemaRecord
from tests.unit.plan.helpers import RELEASES, D, actions, bad, fleet, fleets, host, with_


class TestRollbackTarget:
    def test_default_target_is_previous_version(self):
        plan = p.plan_rollback(D, fleet(host("a", "r2", "r1"), host("b", "r2", "r1")), {})
        assert plan.target == "r1" and not plan.refusal
        assert actions(plan) == {"a": p.SWITCH, "b": p.SWITCH}

    def test_nothing_to_roll_back_to(self):
        plan = p.plan_rollback(D, fleet(host("a", "r1", ""), host("b", "r1", "")), {})
        assert plan.target is None
        assert "no earlier release" in plan.refusal

    def test_fresh_fleet_has_nothing(self):
        plan = p.plan_rollback(D, fleet(host("a", None), host("b", None)), {})
        assert plan.refusal and plan.target is None

    def test_tampered_previous_version_refuses_only_that_host(self):
        plan = p.plan_rollback(D, fleet(host("a", "r2", "r1"), host("b", "r2", "/etc")), {})
        assert plan.target == "r1"
        assert actions(plan) == {"a": p.SWITCH, "b": p.REFUSE}
        refused = [h for h in plan.hosts if h.host == "b"][0]
        assert "outside /srv/app/releases" in refused.reason and "untouched" in refused.reason

    @pytest.mark.parametrize(
        "raw",
        [
            "/etc",
            "../../etc",
            "/srv/app/releases/../../etc",
            "/srv/app/releases/r1/../../x",
            "/srv/app/other/r1",
            "releases/r1/sub",
            "/srv/app/releases/",
            "/srv/app/releases/-rf",
            "/srv/appX/releases/r1",
        ],
    )
    def test_previous_version_outside_releases_is_refused(self, raw):
        plan = p.plan_rollback(D, fleet(host("a", "r2", raw)), {})
        assert p.SWITCH not in actions(plan).values()

    @pytest.mark.parametrize(
        "raw", ["/srv/app/releases/r1", "releases/r1", "/srv/app/releases/r1/", "/srv/app//releases/r1"]
    )
    def test_previous_version_forms_accepted(self, raw):
        plan = p.plan_rollback(D, fleet(host("a", "r2", raw)), {})
        assert plan.target == "r1" and actions(plan) == {"a": p.SWITCH}

    def test_interrupted_switch_rolls_everyone_to_older(self):
        # a deploy r1 -> r2 stopped half-way: rollback must bring all to r1, leave r1 hosts alone
        plan = p.plan_rollback(D, fleet(host("a", "r2", "r1"), host("b", "r1", "r0")), {})
        assert plan.target == "r1"
        assert actions(plan) == {"a": p.SWITCH, "b": p.KEEP}

    def test_rerun_after_partial_rollback_completes_it(self):
        rolled = {"op": "rollback", "from": "r2", "to": "r1"}
        states = fleet(
            host("a", "r1", "r0", last_op=rolled),
            host("b", "r1", "r0", last_op=rolled),
            host("c", "r2", "r1"),
        )
        plan = p.plan_rollback(D, states, {})
        assert plan.target == "r1"
        assert actions(plan) == {"a": p.KEEP, "b": p.KEEP, "c": p.SWITCH}

    def test_rerun_with_host_still_down_never_goes_further_back(self):
        rolled = {"op": "rollback", "from": "r2", "to": "r1"}
        states = fleet(host("a", "r1", "r0", last_op=rolled), host("b", "r1", "r0", last_op=rolled))
        plan = p.plan_rollback(D, states, {"c": "connection refused"})
        assert plan.target == "r1"
        assert actions(plan) == {"a": p.KEEP, "b": p.KEEP, "c": p.UNREACHABLE}

    def test_completed_rollback_then_rollback_again_goes_further_back(self):
        rolled = {"op": "rollback", "from": "r2", "to": "r1"}
        states = fleet(
            host("a", "r1", "r0", last_op=rolled, releases=("r0", "r1", "r2")),
            host("b", "r1", "r0", last_op=rolled, releases=("r0", "r1", "r2")),
        )
        plan = p.plan_rollback(D, states, {})
        assert plan.target == "r0"

    def test_drift_is_refused_without_to(self):
        plan = p.plan_rollback(D, fleet(host("a", "r3", "r2"), host("b", "r2", "r0"), host("c", "r1", "r0")), {})
        assert plan.target is None and "different releases" in plan.refusal

    def test_disagreeing_previous_versions_refused(self):
        plan = p.plan_rollback(D, fleet(host("a", "r3", "r2"), host("b", "r3", "r1")), {})
        assert plan.target is None and "disagree" in plan.refusal

    def test_explicit_target(self):
        plan = p.plan_rollback(D, fleet(host("a", "r3", "r2"), host("b", "r1", "")), {}, to="r1")
        assert plan.target == "r1" and actions(plan) == {"a": p.SWITCH, "b": p.KEEP}

    def test_explicit_target_missing_on_a_host(self):
        plan = p.plan_rollback(
            D, fleet(host("a", "r3", releases=("r1", "r3")), host("b", "r3", releases=("r3",))), {}, to="r1"
        )
        assert actions(plan) == {"a": p.SWITCH, "b": p.REFUSE}

    def test_failed_release_is_not_a_target(self):
        plan = p.plan_rollback(D, fleet(host("a", "r3", "r2", statuses={"r2": "failed"})), {})
        assert actions(plan) == {"a": p.REFUSE}

    def test_current_directory_is_refused(self):
        plan = p.plan_rollback(D, fleet(host("a", None, kind="notlink")), {}, to="r1")
        assert actions(plan) == {"a": p.REFUSE}


@settings(max_examples=400, deadline=None)
@given(fleets(), st.sampled_from([None, *RELEASES]))
def test_rollback_plan_invariants(generated, to):
    states, down = generated
    plan = p.plan_rollback(D, states, down, to)
    assert {h.host for h in plan.hosts} == set(states) | set(down)
    for h in plan.hosts:
        if h.action == p.SWITCH:
            state = states[h.host]
            assert h.target == plan.target and plan.target in state.releases  # target present on that host
            assert h.target != state.current
            assert h.expected_link == state.current_link
    if plan.refusal:
        assert not plan.acting()
    if to is not None:
        if any(to in state.releases for state in states.values()):
            assert plan.target == to
        else:  # a name no reachable host has: refused as a whole, the releases listed, nothing recorded
            assert plan.target is None and "is not on any reachable host" in plan.refusal
            assert not plan.acting() and plan.mark_bad is None


@settings(max_examples=400, deadline=None)
@given(fleets(), st.data())
def test_rerun_after_partial_failure_never_moves_a_host_twice(generated, data):
    """Apply a rollback where some switches fail (or hosts are down), then plan again:
    hosts already moved stay where they are, and failed hosts are sent to the same target."""
    states, down = generated
    first = p.plan_rollback(D, states, down)
    switching = [h.host for h in first.acting()]
    if first.refusal or not switching:
        return
    failed = set(data.draw(st.lists(st.sampled_from(switching), unique=True)))
    if not failed and not down:
        return  # a complete rollback: running it again legitimately goes further back
    after = dict(states)
    for name in switching:
        if name not in failed:
            after[name] = host(
                name,
                first.target,
                "",
                releases=tuple(states[name].releases),
                last_op={"op": "rollback", "to": first.target, "time": "2026-12-02T03:00:00Z"},
            )
    second = p.plan_rollback(D, after, down)
    assert second.target == first.target
    for name in switching:
        again = next(h for h in second.hosts if h.host == name)
        assert again.action == (p.SWITCH if name in failed else p.KEEP)


def expected_two_host_target(c1, p1, c2, p2):
    """An independent statement of the default rollback target for two hosts (None: refused)."""
    if c1 is None and c2 is None:
        return None
    if c1 is None or c2 is None or c1 == c2:
        current = c1 or c2
        previous = {prev for cur, prev in ((c1, p1), (c2, p2)) if cur == current and prev}
        return previous.pop() if len(previous) == 1 else None
    # An interrupted switch from one release to the other: the newer one names the older as previous.
    if p1 == c2 and p2 != c1:
        return c2
    if p2 == c1 and p1 != c2:
        return c1
    return None


def test_every_combination_of_two_hosts_is_planned_as_specified():
    for (c1, c2), (p1, p2) in itertools.product(
        itertools.product([None, *RELEASES], repeat=2), itertools.product(["", *RELEASES], repeat=2)
    ):
        states = fleet(host("a", c1, p1, releases=tuple(RELEASES)), host("b", c2, p2, releases=tuple(RELEASES)))
        plan = p.plan_rollback(D, states, {})
        want = expected_two_host_target(c1, p1, c2, p2)
        case = f"a={c1}/{p1} b={c2}/{p2}"
        if want is None:
            assert plan.refusal and not plan.acting(), case
            continue
        assert not plan.refusal and plan.target == want, case
        actions = {h.host: h.action for h in plan.hosts}
        assert actions == {name: p.KEEP if current == want else p.SWITCH for name, current in (("a", c1), ("b", c2))}, (
            case
        )


class TestRollbackMarks:
    def test_default_target_skips_bad_releases_along_previous_version(self):
        def chained(name):
            state = host(name, "r3", "r2")
            releases = dict(state.releases)
            releases["r3"] = dataclasses.replace(releases["r3"], previous="r2")
            releases["r2"] = dataclasses.replace(releases["r2"], previous="r1")
            return bad(with_(state, releases=releases), "r2")

        plan = p.plan_rollback(D, fleet(chained("a"), chained("b")), {})
        assert plan.target == "r1" and not plan.refusal and plan.mark_bad == "r3"

    def test_bad_previous_with_nothing_before_it_refuses(self):
        plan = p.plan_rollback(D, fleet(bad(host("a", "r3", "r2"), "r2")), {})
        assert plan.target is None and "marked bad" in plan.refusal and "--to" in plan.refusal

    def test_explicit_target_may_be_bad_but_warns(self):
        plan = p.plan_rollback(D, fleet(bad(host("a", "r3", "r2"), "r2")), {}, to="r2")
        assert plan.target == "r2" and any("marked bad" in w for w in plan.warnings)

    def test_going_forward_with_to_does_not_mark_the_release_left(self):
        def ordered(name, current):
            state = host(name, current, "")
            releases = {r: dataclasses.replace(i, staged_at=f"2026-01-0{r[1]}") for r, i in state.releases.items()}
            return with_(state, releases=releases)

        assert p.plan_rollback(D, fleet(ordered("a", "r1")), {}, to="r3").mark_bad is None
        assert p.plan_rollback(D, fleet(ordered("a", "r3")), {}, to="r1").mark_bad == "r3"

    def test_schema_refusal_and_rollback_migrations(self):
        state = host("a", "r3", "r2")
        releases = dict(state.releases)
        releases["r2"] = dataclasses.replace(releases["r2"], schema=2, min_schema=1)
        state = with_(state, releases=releases, schema=SchemaRecord(3, 3, "r3"))
        refused = p.plan_rollback(D, fleet(state), {})
        assert "compatible only down to 3" in refused.refusal and not refused.acting()
        migrating = p.plan_rollback(D, fleet(state), {}, rollback_migrations=True)
        assert not migrating.refusal and migrating.migration == "rollback_migrations"
        assert migrating.schema == SchemaRecord(2, 1, "r2") and migrating.migration_to == 2


# --- operations that switch nothing record nothing: refused as a whole ---


def test_rollback_to_a_release_no_host_has_is_refused_listing_what_exists():
    states = fleet(host("a", "r3", "r2"), host("b", "r3", "r2"))
    states = {
        name: with_(
            state,
            releases={
                rid: dataclasses.replace(info, staged_at=f"2026-11-2{rid[1]}T00:00:00.000000Z")
                for rid, info in state.releases.items()
            },
        )
        for name, state in states.items()
    }
    plan = p.plan_rollback(D, states, {}, "r9")
    assert not plan.acting() and plan.mark_bad is None
    assert plan.refusal.startswith("release r9 is not on any reachable host")
    listed = plan.refusal.split("Newest first: ", 1)[1].rstrip(".")
    assert listed == "r3 (current), r2, r1"  # newest first, short: ids whole, what each is


def test_rollback_where_every_host_refuses_is_refused_as_a_whole():
    states = fleet(host("a", "r3", "r2", releases=("r3",)), host("b", "r3", "r2", releases=("r3",)))
    states = {n: with_(s, releases={**s.releases, "r2": ReleaseInfo("r2", "failed", "d")}) for n, s in states.items()}
    plan = p.plan_rollback(D, states, {}, "r2")
    assert plan.refusal.startswith("no host can be switched to r2") and not plan.acting()


def test_a_target_whose_signer_is_no_longer_trusted_is_refused_and_records_nothing():
    states = fleet(host("a", "r3", "r2"), host("b", "r3", "r2"))
    untrusted = {("a", "r2"): "its signer's key is revoked", ("b", "r1"): "unsigned"}
    plan = p.plan_rollback(D, states, {}, untrusted=untrusted)
    assert (
        plan.refusal
        == "release r2 may not go live again: its signer's key is revoked (on a); --force switches to it anyway"
    )
    assert not plan.acting() and plan.mark_bad is None
    forced = p.plan_rollback(D, states, {}, untrusted=untrusted, force=True)
    assert not forced.refusal and actions(forced) == {"a": p.SWITCH, "b": p.SWITCH}
    assert any("SWITCHING ANYWAY (--force)" in warning for warning in forced.warnings)
    # a release that is untrusted elsewhere, or on a host that does not switch, is no reason
    assert not p.plan_rollback(D, states, {}, untrusted={("a", "r1"): "x", ("b", "r3"): "y"}).refusal


@settings(max_examples=400, deadline=None)
@given(fleets(), st.sampled_from([None, *RELEASES]))
def test_a_rollback_older_than_a_later_switch_never_decides(generated, to):
    """Every switch a host records ends an older rollback's claim: the plan is the same as if the
    rollback records older than the fleet's latest switch were not there."""
    states, down = generated
    newest = max((str((s.last_op or {}).get("time") or "") for s in states.values()), default="")
    forgotten = {
        name: with_(state, last_op=None)
        if state.last_op and state.last_op.get("op") == "rollback" and state.last_op.get("time", "") < newest
        else state
        for name, state in states.items()
    }
    plan, without = p.plan_rollback(D, states, down, to), p.plan_rollback(D, forgotten, down, to)
    assert (plan.target, plan.refusal, actions(plan)) == (without.target, without.refusal, actions(without))


class TestStaleRollbackRecords:
    def test_a_canary_rolled_back_long_ago_does_not_send_the_fleet_back_to_it(self):
        """Canary rolled back to r1 (`--group canary`); the others then deployed r2 and r3."""
        canary = host("canary", "r1", "r0", last_op={"op": "rollback", "to": "r1", "time": "2026-12-01T01:00:00Z"})
        later = {"op": "deploy", "to": "r3", "time": "2026-12-01T03:00:00Z"}
        states = fleet(canary, host("a", "r3", "r2", last_op=later), host("b", "r3", "r2", last_op=later))
        plan = p.plan_rollback(D, states, {})
        assert plan.target is None and "different releases" in plan.refusal
        assert not plan.acting()

    def test_the_latest_rollback_still_completes_on_a_host_it_missed(self):
        rolled = {"op": "rollback", "to": "r1", "time": "2026-12-01T03:00:00Z"}
        earlier = {"op": "deploy", "to": "r2", "time": "2026-12-01T02:00:00Z"}
        states = fleet(host("a", "r1", "r0", last_op=rolled), host("b", "r2", "r1", last_op=earlier))
        plan = p.plan_rollback(D, states, {})
        assert plan.target == "r1" and actions(plan) == {"a": p.KEEP, "b": p.SWITCH}


def test_a_rollback_with_hosts_that_disagree_on_the_recorded_schema_is_refused():
    states = fleet(
        with_(host("a", "r3", "r2"), schema=SchemaRecord(41, 41, "r3")),
        with_(host("b", "r3", "r2"), schema=SchemaRecord(55, 55, "r7")),
    )
    plan = p.plan_rollback(D, states, {})
    assert "41 on a; 55 on b" in plan.refusal and not plan.acting() and plan.mark_bad is None
    forced = p.plan_rollback(D, states, {}, force=True)
    assert not forced.refusal and forced.target == "r2"
