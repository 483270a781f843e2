"""Read-only views of the fleet: status, history, releases, lock status (no lock taken)."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

from deployer import host_signers
from deployer import plan as planning
from deployer.inventory import Inventory
from deployer.lock import is_stale, read_states
from deployer.operations.session import Options, Unreachable, open_fleet
from deployer.plan.names import known_releases
from deployer.report import (
    Progress,
)
from deployer.state import HostState, LockState, ReleaseInfo

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class FleetView:
    """Every host's state as read (no lock taken), for status, history, releases, lock-status."""

    inventory: Inventory
    states: dict[str, HostState]
    unreachable: Unreachable


RECORDS_PER_ENTRY = 6  # the most history records one shown entry holds per host (a drill: 3 switches, reverts)


def history_records(entries: int) -> int:
    """How many records to read per host so that the newest `entries` entries are whole (a drill's
    three records are one entry: reading only `entries` records cut drills short and misnamed their from)."""
    return entries * RECORDS_PER_ENTRY


def read_fleet(inventory: Inventory, options: Options | None = None, history: int = 0) -> FleetView:
    options = options or Options()
    with open_fleet(inventory, options) as fleet:
        states, unreachable = read_states(fleet, Progress(quiet=True), history=history)
    return FleetView(inventory, states, unreachable)


def _lock_summary(lock_state: LockState | None) -> dict[str, Any] | None:
    if lock_state is None:
        return None
    stale = is_stale(lock_state)
    return {"holder": dict(lock_state.info), "description": lock_state.describe(), "stale": stale}


def status_data(view: FleetView) -> dict[str, Any]:
    """Each host's current and previous release, releases, lock, pin, problems; the fleet's split."""
    deploy_to = view.inventory.deploy_to
    hosts: list[dict[str, Any]] = []
    for host in view.inventory.hosts:
        if host.name in view.unreachable:
            hosts.append(
                {
                    "host": host.name,
                    "deploy_to": view.inventory.deploy_to_of(host),
                    "reachable": False,
                    "error": view.unreachable[host.name],
                }
            )
            continue
        state = view.states[host.name]
        previous, previous_problem = state.previous_version(deploy_to)
        live = state.releases.get(state.current or "")
        hosts.append(
            {
                "host": host.name,
                "deploy_to": view.inventory.deploy_to_of(host),
                "reachable": True,
                "hostname": state.hostname,
                "current": state.current,
                "current_link": state.current_link or None,
                "version": live.version or None if live else None,
                "commit": live.commit or None if live else None,
                "signed_by": signed_by(live),
                "previous_version": previous,
                "problems": [p for p in (state.current_problem, previous_problem) if p] + list(state.notes),
                "damaged": list(state.damaged),
                "releases": [
                    {
                        "id": info.release_id,
                        "status": info.status,
                        "digest": info.digest or None,
                        "version": info.version or None,
                        "commit": info.commit or None,
                        "signed_by": signed_by(info),
                        "bad": dict(info.bad) if info.bad is not None else None,
                    }
                    for info in sorted(state.releases.values(), key=lambda i: i.order_key)
                ],
                "lock": _lock_summary(state.lock),
                "pin": dict(state.pin) if state.pin else None,
                "free_kb": state.free_kb,
                "signers": state.signers or None,
            }
        )
    split = planning.split_of(view.states)
    pin = planning.fleet_pin(view.states)
    schema = planning.fleet_schema(view.states)
    return {
        "deploy_to": deploy_to,
        "hosts": hosts,
        "consistent": len(split) <= 1 and all(s.current for s in view.states.values()) and not view.unreachable,
        "split": {release: sorted(n for n, s in view.states.items() if s.current == release) for release in split},
        "currents": sorted({s.current or "-" for s in view.states.values()}),
        "pin": dict(pin) if pin else None,
        "schema": schema.__dict__ if schema else None,
        "locked": sorted(name for name, state in view.states.items() if state.lock is not None),
    }


def signed_by(info: ReleaseInfo | None) -> dict[str, str] | None:
    """Who signed a release, as its host verified when staging it (None: staged unsigned)."""
    if info is None or not info.signer:
        return None
    return {"principal": info.signer, "fingerprint": info.signer_fingerprint}


def status_exit_code(view: FleetView) -> int:
    problems = view.unreachable or any(s.current_problem or s.damaged for s in view.states.values())
    return 1 if problems or len(planning.split_of(view.states)) > 1 else 0


def history_entries(view: FleetView, limit: int) -> list[dict[str, Any]]:
    """The fleet's history, newest first: identical events on several hosts are shown once, with their hosts.

    Ordered by what the hosts saw (each host's history is appended in the order things happened
    there), not by the controllers' clocks: a controller whose clock was behind wrote an earlier
    time on a later switch. Times only break ties between events no host orders."""
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    chains: list[list[tuple[Any, ...]]] = []
    fields = ("op", "from", "to", "release", "user", "result")
    for name, state in view.states.items():
        seen: dict[tuple[str, ...], int] = {}
        chain: list[tuple[Any, ...]] = []
        for entry in state.history:
            # One operation's event on several hosts is one line: keyed by its run id (not by the
            # second it happened in, which differs between hosts); old entries without one by time.
            event = (str(entry.get("run") or entry.get("time", "")), *(str(entry.get(f, "")) for f in fields))
            seen[event] = seen.get(event, 0) + 1
            key = (*event, seen[event])
            item = merged.setdefault(key, {**entry, "hosts": []})
            item["hosts"].append(name)
            item["time"] = min(str(item.get("time", "")), str(entry.get("time", "")))
            chain.append(key)
        chains.append(chain)
    ordered = [merged[key] for key in reversed(in_host_order(chains, lambda key: str(merged[key]["time"])))]
    known = known_releases(view.states)
    for item in ordered:
        item["hosts"].sort()
        # Lines written before versions were recorded: what the release still on the fleet says.
        info = known.get(str(item.get("to") or item.get("release") or ""))
        if info is not None and "version" not in item and "commit" not in item:
            item.update({key: value for key, value in info.revision.as_dict().items()})
        if info is not None and item.get("op") in ("deploy", "rollback", "revert"):
            item["signed_by"] = signed_by(info)
    return _drills_as_one(ordered)[:limit]


def in_host_order(chains: list[list[K]], time: Callable[[K], str]) -> list[K]:
    """Every event once, oldest first, in an order that keeps each host's own order (`chains`: each
    host's events as it recorded them); among events no host orders, the earlier `time` first. Hosts
    that disagree (a cycle: only hand-edited histories) are resolved by time."""
    after: dict[K, set[K]] = {}
    waiting: dict[K, int] = {}
    for chain in chains:
        for key in chain:
            after.setdefault(key, set())
            waiting.setdefault(key, 0)
        for earlier, later in zip(chain, chain[1:], strict=False):
            if earlier != later and later not in after[earlier]:
                after[earlier].add(later)
                waiting[later] += 1
    first_seen = {key: index for index, key in enumerate(waiting)}  # ties: the order they were read in
    ready = [(time(key), first_seen[key], key) for key, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[K] = []
    while len(order) < len(waiting):
        if not ready:  # a cycle: take the earliest event still waiting
            key = min((key for key in waiting if waiting[key] > 0), key=lambda key: (time(key), first_seen[key]))
            waiting[key] = 0
            ready.append((time(key), first_seen[key], key))
        key = heapq.heappop(ready)[2]
        order.append(key)
        for later in after[key]:
            if waiting[later] > 0:
                waiting[later] -= 1
                if waiting[later] == 0:
                    heapq.heappush(ready, (time(later), first_seen[later], later))
    return order


def _drills_as_one(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A drill's switches (entries carrying `drill`: its phase) as one entry, its phases inside in order."""
    drills: dict[str, dict[str, Any]] = {}
    shown: list[dict[str, Any]] = []
    for entry in entries:
        phase = entry.get("drill")
        run_id = str(entry.get("run") or "")
        if not phase or not run_id:
            shown.append(entry)
            continue
        drill = drills.get(run_id)
        if drill is None:
            drill = {
                "op": "rollback-drill",
                "run": run_id,
                "time": entry.get("time", ""),
                "user": entry.get("user", ""),
                "hosts": [],
                "phases": [],
                "result": "ok",
            }
            drills[run_id] = drill
            shown.append(drill)
        drill["time"] = min(str(drill["time"]), str(entry.get("time", "")))
        drill["hosts"] = sorted(set(drill["hosts"]) | set(entry["hosts"]))
        drill["phases"].insert(
            0,
            {
                key: entry.get(key)
                for key in ("drill", "op", "from", "to", "result", "time", "hosts", "version", "commit")
                if key in entry
            },
        )
        if entry.get("result") not in (None, "ok"):
            drill["result"] = "failed"
    for drill in drills.values():
        phases = drill["phases"]
        drill["from"], drill["to"] = phases[0].get("from"), phases[-1].get("to")
        drill.update({key: phases[-1][key] for key in ("version", "commit") if phases[-1].get(key)})
        if phases[-1].get("drill") == "restore":
            drill["result"] = "failed (restored)"
    return shown


def releases_table(view: FleetView) -> list[dict[str, Any]]:
    """Per release: which hosts have it, are on it, record it as previous; bad, failed, pinned."""
    pin = planning.fleet_pin(view.states)
    pinned = pin.get("release") if pin else None
    table: dict[str, dict[str, Any]] = {}
    for name, state in sorted(view.states.items()):
        previous, _problem = state.previous_version(view.inventory.deploy_to)
        for info in state.releases.values():
            row = table.setdefault(
                info.release_id,
                {
                    "id": info.release_id,
                    "staged_at": info.staged_at or None,
                    "digest": info.digest or None,
                    "version": info.version or None,
                    "commit": info.commit or None,
                    "schema": info.schema,
                    "signed_by": None,
                    "signed_on": [],
                    "hosts": [],
                    "current_on": [],
                    "previous_on": [],
                    "failed_on": [],
                    "bad": None,
                    "pinned": info.release_id == pinned,
                },
            )
            row["hosts"].append(name)
            if state.current == info.release_id:
                row["current_on"].append(name)
            if previous == info.release_id:
                row["previous_on"].append(name)
            if info.status in ("failed", "validating"):
                row["failed_on"].append(name)
            if info.bad is not None and row["bad"] is None:
                row["bad"] = dict(info.bad)
            if info.signer:
                row["signed_on"].append(name)
                row["signed_by"] = row["signed_by"] or signed_by(info)
            if not row["version"] and not row["commit"]:  # a host that recorded them
                row["version"], row["commit"] = info.version or None, info.commit or None
    return sorted(table.values(), key=lambda row: (row["staged_at"] or "", row["id"]), reverse=True)


LOW_DISK_MB = 100  # `check` calls a host short of room below this (a release needs its tarball and its files)


def _signers_check(state: HostState, copy: host_signers.HostCopy | None) -> str:
    """The host's own copy of who may sign, against the inventory's: what `check` reports."""
    if copy is None:
        return "kept without signatures" if state.signers else "-"
    if not state.signers:
        return "placed by the first signed deploy"
    return "same" if state.signers == copy.digests else "differ"


def check_rows(view: FleetView) -> list[dict[str, Any]]:
    """`deployer check`: per host, whether a deploy could run there (read only, no lock taken)."""
    rows = []
    copies = host_signers.host_copies(view.inventory, view.states)
    for host in view.inventory.hosts:
        row: dict[str, Any] = {"host": host.name, "address": f"{host.address}:{host.port}", "problems": []}
        if host.name in view.unreachable:
            row.update(connect=view.unreachable[host.name], ok=False)
            row["problems"].append(view.unreachable[host.name])
            rows.append(row)
            continue
        state = view.states[host.name]
        free_mb = state.free_kb // 1024 if state.free_kb is not None else None
        row.update(
            connect="ok",
            hostname=state.hostname,
            deploy_to=state.deploy_to,
            deploy_to_exists=state.deploy_to_exists,
            writable=state.writable == "yes",
            missing_tools=list(state.missing_tools),
            free_mb=free_mb,
            current=state.current,
        )
        if state.writable != "yes":
            where = state.deploy_to if state.deploy_to_exists else f"the folder that would hold {state.deploy_to}"
            row["problems"].append(f"the deploy user cannot write {where}")
        if state.missing_tools:
            row["problems"].append(state.lacks_tools())
        if free_mb is not None and free_mb < LOW_DISK_MB:
            row["problems"].append(f"only {free_mb} MB free in {state.deploy_to}")
        row["signers"] = _signers_check(state, copies.get(host.name))
        if row["signers"] in ("differ", "kept without signatures"):
            row["problems"].append(
                f"its allowed signers (.deployer/signers) {'differ from' if row['signers'] == 'differ' else 'are not'}"
                " the inventory's: deploys are refused until `deployer place-signers`"
            )
        row["ok"] = not row["problems"]
        rows.append(row)
    return rows
