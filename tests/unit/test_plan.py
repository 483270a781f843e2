"""Planning is pure: hundreds of fleet states, no SSH."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployer import plan as p
from deployer.state import HostState, ReleaseInfo

D = "/srv/app"


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


class TestDeployPlan:
    def test_first_deploy_uploads_everywhere(self):
        plan = p.plan_deploy(D, fleet(host("a", None, releases=()), host("b", None, releases=())), {}, "r9", "d9")
        assert actions(plan) == {"a": p.STAGE, "b": p.STAGE}
        assert all(h.source == p.UPLOAD and h.previous_version == "" for h in plan.hosts)

    def test_previous_version_records_each_hosts_current(self):
        plan = p.plan_deploy(D, fleet(host("a", "r2")), {}, "r9", "d9")
        (only,) = plan.hosts
        assert only.previous_version == f"{D}/releases/r2" and only.expected_link == "releases/r2"

    def test_any_unreachable_host_blocks_everyone(self):
        plan = p.plan_deploy(D, fleet(host("a", "r2")), {"b": "timed out"}, "r9", "d9")
        assert plan.refusal and "b" in plan.refusal

    def test_existing_release_with_other_content_is_never_reused(self):
        state = host("a", "r2", releases=("r2", "r9"))
        plan = p.plan_deploy(D, fleet(state), {}, "r9", "other-digest")
        assert actions(plan) == {"a": p.REFUSE} and plan.refusal

    def test_already_staged_same_digest_only_switches(self):
        plan = p.plan_deploy(D, fleet(host("a", "r2", releases=("r2", "r9"))), {}, "r9", "digest-r9")
        assert actions(plan) == {"a": p.SWITCH}

    def test_already_current_is_kept(self):
        plan = p.plan_deploy(D, fleet(host("a", "r9", releases=("r9",))), {}, "r9", "digest-r9")
        assert actions(plan) == {"a": p.KEEP} and not plan.refusal

    def test_cached_artifact_is_not_uploaded_again(self):
        state = HostState(host="a", deploy_to_exists=True, cached_digests=frozenset({"d9"}))
        plan = p.plan_deploy(D, fleet(state), {}, "r9", "d9")
        assert plan.hosts[0].source == p.CACHE

    def test_current_directory_refused(self):
        plan = p.plan_deploy(D, fleet(host("a", None, kind="notlink")), {}, "r9", "d9")
        assert actions(plan) == {"a": p.REFUSE} and plan.refusal


RELEASES = ["r0", "r1", "r2", "r3"]


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
        last = draw(st.sampled_from([None, {"op": "rollback", "to": current}, {"op": "deploy", "to": current}]))
        states[f"h{i}"] = host(f"h{i}", current, previous, releases=tuple(sorted(present)), last_op=last)
    down = {f"d{i}": "refused" for i in range(draw(st.integers(0, 2)))}
    return states, down


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
        assert plan.target == to


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
                last_op={"op": "rollback", "to": first.target},
            )
    second = p.plan_rollback(D, after, down)
    assert second.target == first.target
    for name in switching:
        again = next(h for h in second.hosts if h.host == name)
        assert again.action == (p.SWITCH if name in failed else p.KEEP)


def test_every_combination_of_two_hosts_is_planned_without_error():
    for (c1, c2), (p1, p2) in itertools.product(
        itertools.product([None, *RELEASES], repeat=2), itertools.product(["", *RELEASES], repeat=2)
    ):
        states = fleet(host("a", c1, p1, releases=tuple(RELEASES)), host("b", c2, p2, releases=tuple(RELEASES)))
        plan = p.plan_rollback(D, states, {})
        assert plan.refusal or plan.target in RELEASES
