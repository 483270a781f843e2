"""Planning is pure: hundreds of fleet states, no SSH."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployer import plan as p
from deployer.release import Manifest
from deployer.state import HostState, ReleaseInfo, SchemaRecord

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


# --- pin, drift, bad marks, schema, pruning, batches ---

PIN = {"release": "r1", "user": "ana", "time": "2026-11-22T03:00:00Z", "why": "checkout broken"}


def with_(state, **changes):
    return dataclasses.replace(state, **changes)


def bad(state, release, why="rolled back"):
    releases = dict(state.releases)
    releases[release] = dataclasses.replace(releases[release], bad={"why": why, "user": "ana", "time": "t"})
    return with_(state, releases=releases)


class TestDeployGuards:
    def test_pinned_fleet_refuses_with_who_and_why(self):
        plan = p.plan_deploy(D, fleet(with_(host("a", "r1"), pin=PIN), host("b", "r1")), {}, "r9", "d9")
        assert "pinned to r1 by ana" in plan.refusal and "checkout broken" in plan.refusal
        assert "inv unpin" in plan.refusal

    def test_unpin_lets_the_deploy_through_with_a_warning(self):
        plan = p.plan_deploy(D, fleet(with_(host("a", "r1"), pin=PIN)), {}, "r9", "d9", unpin=True)
        assert not plan.refusal and any("removes the pin" in w for w in plan.warnings)

    def test_split_fleet_refuses_and_names_the_split(self):
        plan = p.plan_deploy(D, fleet(host("a", "r1"), host("b", "r2"), host("c", "r2")), {}, "r9", "d9")
        assert "different releases" in plan.refusal
        assert "r1: a" in plan.refusal and "r2: b, c" in plan.refusal
        assert not plan.refusal.startswith("no host") and "--force" in plan.refusal

    def test_force_converges_a_split_fleet(self):
        plan = p.plan_deploy(D, fleet(host("a", "r1"), host("b", "r2")), {}, "r9", "d9", force=True)
        assert not plan.refusal and actions(plan) == {"a": p.STAGE, "b": p.STAGE}

    def test_resuming_the_release_some_hosts_already_run_is_not_drift(self):
        plan = p.plan_deploy(D, fleet(host("a", "r1"), host("b", "r3")), {}, "r3", "digest-r3")
        assert not plan.refusal and actions(plan) == {"a": p.SWITCH, "b": p.KEEP}

    def test_fresh_hosts_joining_are_not_drift(self):
        plan = p.plan_deploy(D, fleet(host("a", "r1"), host("new", None, releases=())), {}, "r9", "d9")
        assert not plan.refusal

    def test_deploying_a_bad_artifact_warns(self):
        state = bad(host("a", "r1"), "r2", "broke checkout")
        plan = p.plan_deploy(D, fleet(state), {}, "r9", "digest-r2")
        assert not plan.refusal and any("marked bad (broke checkout" in w for w in plan.warnings)

    def test_schema_too_old_for_the_database_is_refused_unless_forced(self):
        state = with_(host("a", "r1"), schema=SchemaRecord(5, 5, "r1"))
        manifest = Manifest(4, 4)
        plan = p.plan_deploy(D, fleet(state), {}, "r9", "d9", manifest=manifest)
        assert "compatible only down to 5" in plan.refusal
        forced = p.plan_deploy(D, fleet(state), {}, "r9", "d9", manifest=manifest, force=True)
        assert not forced.refusal and forced.warnings

    def test_newer_schema_runs_migrate_and_is_recorded(self):
        state = with_(host("a", "r1"), schema=SchemaRecord(1, 1, "r1"))
        plan = p.plan_deploy(D, fleet(state), {}, "r9", "d9", manifest=Manifest(2, 1))
        assert plan.migration == "migrate" and (plan.migration_from, plan.migration_to) == (1, 2)
        assert plan.schema == SchemaRecord(2, 1, "r9")


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


def release_infos(draw, count):
    infos = {}
    for index in range(count):
        status = draw(st.sampled_from(["ok", "ok", "ok", "failed", "validating", "unmanaged"]))
        marked = {"why": "x"} if status == "ok" and draw(st.booleans()) else None
        infos[f"r{index}"] = ReleaseInfo(f"r{index}", status, f"d{index}", staged_at=f"{index:04d}", bad=marked)
    return infos


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_pruning_never_removes_a_protected_release_and_keeps_the_newest(data):
    infos = release_infos(data.draw, data.draw(st.integers(0, 12)))
    protected = set(data.draw(st.sets(st.sampled_from(sorted(infos) or ["none"]))))
    keep = data.draw(st.integers(1, 5))
    keep_failed = data.draw(st.integers(0, 3))
    state = HostState(host="a", deploy_to_exists=True, releases=infos)
    doomed = p.prune_list(state, keep, keep_failed, protected)
    assert not set(doomed) & protected
    assert all(infos[r].status != "unmanaged" for r in doomed)  # folders the tool did not make stay
    good = sorted((i for i in infos.values() if i.status == "ok" and i.bad is None), key=lambda i: i.order_key)
    newest_good = {i.release_id for i in good[-keep:]}
    assert not set(doomed) & newest_good
    kept_good = [i for i in good if i.release_id not in doomed]
    assert len(kept_good) <= max(keep, len({i.release_id for i in good} & protected) + keep)
    assert list(doomed) == sorted(doomed, key=lambda r: infos[r].order_key)  # oldest first


def test_prune_protects_any_release_a_fleet_host_is_on():
    a = host("a", "r3", "r2", releases=("r0", "r1", "r2", "r3"))
    b = host("b", "r0", "", releases=("r0", "r1", "r2", "r3"))
    removal = p.plan_prune(D, fleet(a, b), keep=1, keep_failed=0)
    assert removal["a"] == ("r1",)  # r0 is b's current, r2 is a's previous, r3 a's current
    assert removal["b"] == ("r1", "r2")  # r3 is a's current


def test_pinned_release_is_never_pruned():
    a = with_(host("a", "r3", "r2", releases=("r0", "r1", "r2", "r3")), pin={"release": "r0"})
    assert "r0" not in p.plan_prune(D, fleet(a), keep=1, keep_failed=0)["a"]


@given(st.integers(1, 300), st.integers(1, 300))
def test_batches_cover_every_host_once_in_order(hosts, size):
    names = [f"h{i}" for i in range(hosts)]
    groups = p.batches(names, size)
    assert [name for group in groups for name in group] == names
    assert all(1 <= len(group) <= size for group in groups)


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
    listed = plan.refusal.split("newest first: ", 1)[1]
    assert [part.split(" ")[0] for part in listed.split("; ")] == ["r3", "r2", "r1"]  # newest first
    assert "CURRENT" in listed.split("; ")[0] and "on 2/2 hosts" in listed


def test_rollback_where_every_host_refuses_is_refused_as_a_whole():
    states = fleet(host("a", "r3", "r2", releases=("r3",)), host("b", "r3", "r2", releases=("r3",)))
    states = {n: with_(s, releases={**s.releases, "r2": ReleaseInfo("r2", "failed", "d")}) for n, s in states.items()}
    plan = p.plan_rollback(D, states, {}, "r2")
    assert plan.refusal.startswith("no host can be switched to r2") and not plan.acting()


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
