"""Which old releases go (deployer/plan/prune.py): never a protected one."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from deployer import plan as p
from deployer.state import HostState, ReleaseInfo
from tests.unit.plan.helpers import D, fleet, host, with_


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
