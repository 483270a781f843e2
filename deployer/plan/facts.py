"""Facts about the fleet drawn from every host's state: the split, the pin, the schema, bad marks, releases."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from deployer.release import Manifest
from deployer.state import HostState, ReleaseInfo, SchemaRecord


def split_of(states: Mapping[str, HostState]) -> Counter[str]:
    """How many hosts are on each release (hosts without a current release are not counted)."""
    return Counter(state.current for state in states.values() if state.current is not None)


def describe_split(states: Mapping[str, HostState]) -> str:
    by_release: dict[str, list[str]] = {}
    for name, state in sorted(states.items()):
        by_release.setdefault(state.current or "(none)", []).append(name)
    return "; ".join(f"{release}: {', '.join(names)}" for release, names in sorted(by_release.items()))


def fleet_pin(states: Mapping[str, HostState]) -> Mapping[str, Any] | None:
    """The pin any host records (they are written together; the first found is shown)."""
    for _name, state in sorted(states.items()):
        if state.pin is not None:
            return state.pin
    return None


def fleet_schema(states: Mapping[str, HostState]) -> SchemaRecord | None:
    """The schema the hosts record (the highest, where they disagree: see `schema_disagreement`)."""
    records = [state.schema for state in states.values() if state.schema is not None]
    return max(records, key=lambda record: (record.version, record.min_compatible)) if records else None


SCHEMA_SPLIT_HINT = (
    "; correct <deploy_to>/.deployer/schema on the hosts that are wrong, or use --force to take the highest"
)


def schema_disagreement(states: Mapping[str, HostState]) -> str:
    """Hosts recording different database schema versions, named ("" when those that record one
    agree). The database is shared, so one host's record (restored from a staging copy, say) must
    not silently decide migrations for the fleet. Hosts with no record yet (new ones) do not count."""
    by_version: dict[int, list[str]] = {}
    for name, state in sorted(states.items()):
        if state.schema is not None:
            by_version.setdefault(state.schema.version, []).append(name)
    if len(by_version) <= 1:
        return ""
    split = "; ".join(f"{version} on {', '.join(hosts)}" for version, hosts in sorted(by_version.items()))
    return f"hosts disagree about the database schema they record ({split})"


def bad_marks(states: Mapping[str, HostState]) -> dict[str, Mapping[str, Any]]:
    marks: dict[str, Mapping[str, Any]] = {}
    for state in states.values():
        for release_id, info in state.bad_releases().items():
            marks.setdefault(release_id, info)
    return marks


def describe_pin(pin: Mapping[str, Any]) -> str:
    text = f"pinned to {pin.get('release') or 'an unknown release'}"
    commit, version = str(pin.get("commit") or ""), str(pin.get("version") or "")
    if commit or version:  # "tracking commit 1a2b3c4d (v1.4.2)": what the fleet stays on until unpinned
        label = f"commit {commit[:8]}" + (f" ({version})" if version else "") if commit else f"version {version}"
        text += f", tracking {label}"
    if pin.get("user"):
        text += f" by {pin['user']}"
    if pin.get("time"):
        text += f" at {pin['time']}"
    if pin.get("why"):
        text += f" ({pin['why']})"
    return text


def schema_problem(release_id: str, manifest: Manifest | None, recorded: SchemaRecord | None) -> str:
    """Why `release_id` cannot run against the recorded database schema; "" when it can (or nothing is known)."""
    if recorded is None:
        return ""
    if manifest is None:
        if recorded.min_compatible <= 0:
            return ""
        return (
            f"release {release_id} declares no schema_version, and the database is at schema {recorded.version} "
            f"(compatible down to {recorded.min_compatible}, recorded by {recorded.release or 'an earlier release'})"
        )
    if manifest.schema_version < recorded.min_compatible:
        return (
            f"release {release_id} is written for schema {manifest.schema_version}, but the database is at "
            f"schema {recorded.version}, which is compatible only down to {recorded.min_compatible} "
            f"(recorded by {recorded.release or 'an earlier release'})"
        )
    return ""


def manifest_of(info: ReleaseInfo | None) -> Manifest | None:
    if info is None or info.schema is None:
        return None
    return Manifest(info.schema, info.min_schema if info.min_schema is not None else info.schema)


def release_anywhere(states: Mapping[str, HostState], release_id: str) -> ReleaseInfo | None:
    for _name, state in sorted(states.items()):
        info = state.releases.get(release_id)
        if info is not None:
            return info
    return None


def describe_releases(states: Mapping[str, HostState], limit: int = 10) -> str:
    """The releases present on the fleet, newest first, with when they were staged and on how many hosts."""
    seen: dict[str, tuple[ReleaseInfo, int]] = {}
    for state in states.values():
        for release_id, info in state.releases.items():
            known, count = seen.get(release_id, (info, 0))
            seen[release_id] = (known, count + 1)
    if not seen:
        return "no host has any release"
    ordered = sorted(seen.values(), key=lambda item: item[0].order_key, reverse=True)
    parts = []
    for info, count in ordered[:limit]:
        staged = f"staged {info.staged_at[:19].replace('T', ' ')}" if info.staged_at else "not staged by this tool"
        marks = [staged, f"on {count}/{len(states)} hosts"]
        if info.bad is not None:
            marks.append("BAD")
        if any(state.current == info.release_id for state in states.values()):
            marks.append("CURRENT")
        label = info.revision.label()
        parts.append(f"{info.release_id} ({', '.join(([label] if label else []) + marks)})")
    more = f", and {len(ordered) - limit} older" if len(ordered) > limit else ""
    return "; ".join(parts) + more


def digest_of(states: Mapping[str, HostState], release_id: str) -> str:
    info = release_anywhere(states, release_id)
    return info.digest if info else ""


CLOCK_SLACK = timedelta(seconds=60)  # clocks a minute apart are not worth a warning


def fleet_clock(states: Mapping[str, HostState], now: datetime) -> tuple[datetime, str]:
    """The time a deploy records its release at: `now`, unless a host holds a release staged later
    (this machine's clock is behind the one that staged it: a CI runner restored from a snapshot).
    Then just after that release, so the new one still sorts after every release the hosts hold
    (release order, rollback's targets and bad marks follow it); with a warning when the gap is
    more than a minute."""
    newest: datetime | None = None
    where = ""
    for name, state in sorted(states.items()):
        for info in state.releases.values():
            staged = _utc(info.staged_at)
            if staged is not None and (newest is None or staged > newest):
                newest, where = staged, name
    if newest is None or newest < now:
        return now, ""
    warning = ""
    if newest - now > CLOCK_SLACK:
        behind = newest - now
        hours = behind.total_seconds() / 3600
        gap = f"{hours / 24:.1f} days" if hours >= 24 else f"{hours:.1f} hours" if hours >= 1 else f"{behind.seconds} s"
        warning = (
            f"this machine's clock ({now:%Y-%m-%dT%H:%M:%SZ}) is {gap} behind the fleet: {where} holds a release "
            f"staged at {newest:%Y-%m-%dT%H:%M:%SZ}; the new release is recorded just after it, so it still sorts "
            "last, but times written from here are wrong until this clock is set right (NTP)"
        )
    return newest + timedelta(seconds=1), warning


def _utc(text: str) -> datetime | None:
    for layout in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, layout).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    return None
