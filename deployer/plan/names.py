"""Which release a name given by a person means: a release id, a version label, or a commit prefix.

An ambiguous or unknown name is refused with the candidates listed, before anything changes.
"""

from __future__ import annotations

from collections.abc import Mapping

from deployer.plan.facts import describe_releases
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
    return None, (
        f"release {name} is not on any reachable host (no release id, version or commit there is {name}){hint}; "
        f"the releases there, newest first: {describe_releases(states)}"
    )
