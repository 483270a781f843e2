"""Which release a name given by a person means: a release id, a version label, or a commit prefix.

An ambiguous or unknown name is refused with the candidates listed, before anything changes.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from deployer.invocation import command
from deployer.revision import COMMIT_PREFIX
from deployer.state import HostState, ReleaseInfo


def known_releases(states: Mapping[str, HostState]) -> dict[str, ReleaseInfo]:
    """Every release on the fleet, with the version and commit any host recorded for it."""
    found: dict[str, ReleaseInfo] = {}
    for _name, state in sorted(states.items()):
        for release_id, info in state.releases.items():
            known = found.get(release_id)
            if known is None or (not known.version and not known.commit):
                found[release_id] = info
    return found


def describe(info: ReleaseInfo) -> str:
    label = info.revision.label()
    return f"{info.release_id} ({label})" if label else info.release_id


def resolve_release(name: str, states: Mapping[str, HostState]) -> tuple[str | None, str]:
    """(release id, "") for the one release `name` means, else (None, why, with the candidates).

    A release id matches first; then a version label; then a commit prefix (7 or more hex digits).
    """
    releases = known_releases(states)
    if name in releases:
        return name, ""
    by_version = sorted(rid for rid, info in releases.items() if info.version == name)
    by_commit: list[str] = []
    if COMMIT_PREFIX.match(name.lower()):
        by_commit = sorted(rid for rid, info in releases.items() if info.commit.startswith(name.lower()))
    matches = by_version or by_commit
    if len(matches) == 1:
        return matches[0], ""
    if matches:
        what = "version" if by_version else "commit prefix"
        listed = "; ".join(describe(releases[rid]) for rid in matches)
        return None, f"{what} {name} names {len(matches)} releases: {listed}; give the release id"
    hint = ""
    if not COMMIT_PREFIX.match(name.lower()) and all(c in "0123456789abcdefABCDEF" for c in name):
        hint = " (a commit prefix needs at least 7 hex digits)"
    guess = _near_name(name, releases)
    if guess:
        hint += f"; did you mean {guess}?"
    return None, (
        f"release {name} is not on any reachable host (no release id, version or commit there is {name}){hint}"
        f"{'' if hint.endswith('?') else '.'} "
        f"Newest first: {_short_list(states, releases)}"
    )


SHORT_LIST = 5  # releases named in a refusal: the newest few; `releases` lists them all


def _near_name(name: str, releases: Mapping[str, ReleaseInfo]) -> str | None:
    """The version label or release id closest to a mistyped name (`v2.0.1` -> `v2.0.0`)."""
    labels = sorted({info.version for info in releases.values() if info.version} | set(releases))
    found = difflib.get_close_matches(name, labels, n=1, cutoff=0.75)
    return found[0] if found else None


def _short_list(states: Mapping[str, HostState], releases: Mapping[str, ReleaseInfo]) -> str:
    if not releases:
        return "no host has any release."
    ordered = sorted(releases.values(), key=lambda info: info.order_key, reverse=True)
    currents = {state.current for state in states.values()}
    parts = []
    for info in ordered[:SHORT_LIST]:
        marks = [mark for mark, on in (("current", info.release_id in currents), ("bad", info.bad is not None)) if on]
        holders = sum(info.release_id in state.releases for state in states.values())
        if holders < len(states):
            marks.append(f"on {holders}/{len(states)} hosts")
        label = info.revision.label()
        parts.append(
            f"{label + ' = ' if label else ''}{info.release_id}{' (' + ', '.join(marks) + ')' if marks else ''}"
        )
    more = (
        f"; {len(ordered) - SHORT_LIST} older (`{command('releases')}` lists all)" if len(ordered) > SHORT_LIST else ""
    )
    return ", ".join(parts) + more + "."
