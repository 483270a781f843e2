"""How a deploy is decided (deployer/plan/deploy.py): per-host actions and the fleet's guards."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from deployer import plan as p
from deployer.release import Manifest
from deployer.state import HostState, SchemaRecord
from tests.unit.plan.helpers import PIN, D, actions, bad, fleet, host, with_


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


class TestDeployGuards:
    def test_pinned_fleet_refuses_with_who_and_why(self):
        plan = p.plan_deploy(D, fleet(with_(host("a", "r1"), pin=PIN), host("b", "r1")), {}, "r9", "d9")
        assert "pinned to r1 by ana" in plan.refusal and "checkout broken" in plan.refusal
        assert "`deployer unpin`" in plan.refusal  # the installed program unless a front end said otherwise

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

    def test_hosts_that_disagree_on_the_recorded_schema_are_refused_with_both_values(self):
        """A host restored from staging records 55, the others 41: the release (schema 50) would skip
        `migrate` on the strength of one host's record. Refused, both values named; nothing acts."""
        a = with_(host("a", "r1"), schema=SchemaRecord(41, 41, "r1"))
        b = with_(host("b", "r1"), schema=SchemaRecord(41, 41, "r1"))
        restored = with_(host("c", "r1"), schema=SchemaRecord(55, 50, "r7"))
        new = with_(host("d", "r1"))  # no record yet: not a disagreement
        plan = p.plan_deploy(D, fleet(a, b, restored, new), {}, "r9", "d9", manifest=Manifest(50, 41))
        assert "41 on a, b; 55 on c" in plan.refusal and not plan.acting() and plan.migration == ""
        forced = p.plan_deploy(D, fleet(a, b, restored, new), {}, "r9", "d9", manifest=Manifest(56, 41), force=True)
        assert not forced.refusal and any("disagree" in warning for warning in forced.warnings)
        agreeing = p.plan_deploy(D, fleet(a, b, new), {}, "r9", "d9", manifest=Manifest(50, 41))
        assert not agreeing.refusal and agreeing.migration == "migrate"


@given(st.integers(1, 300), st.integers(1, 300))
def test_batches_cover_every_host_once_in_order(hosts, size):
    names = [f"h{i}" for i in range(hosts)]
    groups = p.batches(names, size)
    assert [name for group in groups for name in group] == names
    assert all(1 <= len(group) <= size for group in groups)


SIGNERS = "a" * 64 + " - " + "b" * 64


def test_a_host_whose_copy_of_the_signers_differs_is_refused_and_one_without_gets_it_placed():
    states = fleet(with_(host("a", "r1"), signers=SIGNERS), host("b", "r1"), with_(host("c", "r1"), signers=SIGNERS))
    plan = p.plan_deploy(D, states, {}, "r9", "digest-r9", signers={"a": SIGNERS, "b": SIGNERS, "c": "c" * 64 + " - -"})
    assert plan.refusal and not plan.acting()
    refused = {h.host: h.reason for h in plan.hosts if h.action == p.REFUSE}
    assert list(refused) == ["c"] and "are not the inventory's" in refused["c"]
    fine = p.plan_deploy(D, states, {}, "r9", "digest-r9", signers={"a": SIGNERS, "b": SIGNERS, "c": SIGNERS})
    assert not fine.refusal
    assert {h.host: h.place_signers for h in fine.hosts} == {"a": False, "b": True, "c": False}
    # a host that keeps a copy the inventory no longer speaks of is refused too (its policy may require signatures)
    dropped = p.plan_deploy(D, states, {}, "r9", "digest-r9", signers={})
    assert {h.host for h in dropped.hosts if h.action == p.REFUSE} == {"a", "c"}


def test_an_unsigned_staged_release_is_not_reused_when_signatures_are_required():
    from datetime import datetime, timezone

    now = datetime(2026, 12, 2, tzinfo=timezone.utc)
    states = fleet(host("a", "r1", releases=("r1", "r2")), host("b", "r1", releases=("r1", "r2")))
    assert p.choose_release_id(states, "digest-r2", now) == "r2"
    fresh = p.choose_release_id(states, "digest-r2", now, signed_only=True)
    assert fresh not in ("r1", "r2")
    signed = {
        n: with_(s, releases={**s.releases, "r2": with_(s.releases["r2"], signer="ci")}) for n, s in states.items()
    }
    assert p.choose_release_id(signed, "digest-r2", now, signed_only=True) == "r2"
