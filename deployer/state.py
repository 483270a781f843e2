"""A host's deployment state as data, parsed from the `gather` script's records.

Everything read from a host is treated as untrusted data: link targets and `previousVersion`
are only turned into release ids when they name a folder directly inside `<deploy_to>/releases/`.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deployer.release import is_release_id
from deployer.scripts import ScriptOutput

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_VALIDATING = "validating"
STATUS_UNMANAGED = "unmanaged"
USABLE_STATUSES = frozenset({STATUS_OK, STATUS_UNMANAGED})


@dataclass(frozen=True)
class ReleaseInfo:
    release_id: str
    status: str
    digest: str

    @property
    def usable(self) -> bool:
        return self.status in USABLE_STATUSES


@dataclass(frozen=True)
class HostState:
    """What `gather` found on one host."""

    host: str
    hostname: str = ""
    deploy_to_exists: bool = False
    current_kind: str = "missing"  # "link" | "missing" | "notlink"
    current_link: str = ""  # raw link text, exactly as readlink printed it
    current: str | None = None  # release id `current` resolves to, when it is a sound release link
    current_problem: str = ""
    previous_version_raw: str | None = None  # first line of current/previousVersion; None without one
    releases: Mapping[str, ReleaseInfo] = field(default_factory=dict)
    last_op: Mapping[str, Any] | None = None
    cached_digests: frozenset[str] = frozenset()
    free_kb: int | None = None
    notes: tuple[str, ...] = ()

    def previous_version(self, deploy_to: str) -> tuple[str | None, str]:
        """(release id, problem) recorded in current's previousVersion; (None, "") when empty."""
        if self.current is None or self.previous_version_raw is None:
            return None, ""
        return parse_previous_version(self.previous_version_raw, deploy_to)


def parse_previous_version(raw: str, deploy_to: str) -> tuple[str | None, str]:
    """Turn previousVersion's text into a release id, refusing anything outside releases/."""
    text = raw.strip()
    if not text:
        return None, ""
    releases_dir = posixpath.join(deploy_to, "releases")
    parent, name = posixpath.split(posixpath.normpath(text))
    expected_parent = releases_dir if text.startswith("/") else "releases"
    if parent == expected_parent and is_release_id(name) and ".." not in text.split("/"):
        return name, ""
    return None, f"previousVersion points outside {releases_dir}/: {raw!r}"


def parse_state(host: str, output: ScriptOutput, deploy_to: str) -> HostState:
    """Build a HostState from gather's records."""
    notes: list[str] = []
    hostname = (output.first("hostname") or [""])[0]
    deploy_to_record = output.first("deploy_to") or ["missing"]
    if deploy_to_record[0] != "present":
        return HostState(host=host, hostname=hostname)

    releases_dir = "\t".join(output.first("releases_dir") or [])
    releases: dict[str, ReleaseInfo] = {}
    for fields in output.all("release"):
        release_id = fields[0] if fields else ""
        if not is_release_id(release_id):
            notes.append(f"ignored a folder in releases/ with an invalid name: {release_id!r}")
            continue
        status = fields[1] if len(fields) > 1 else STATUS_UNMANAGED
        digest = fields[2] if len(fields) > 2 and fields[2] != "-" else ""
        releases[release_id] = ReleaseInfo(release_id, status, digest)

    current_kind, current_link, current, problem = "missing", "", None, ""
    previous_raw: str | None = None
    record = output.first("current") or ["missing"]
    if record[0] == "link":
        current_kind = "link"
        current_link = "\t".join(record[1:])
        resolved = "\t".join(output.first("current_resolved") or [])
        if output.first("current_dangling") is not None:
            problem = f"current is a dangling link to {current_link!r}"
        elif (
            releases_dir and posixpath.dirname(resolved) == releases_dir and is_release_id(posixpath.basename(resolved))
        ):
            current = posixpath.basename(resolved)
        else:
            problem = f"current points outside {deploy_to}/releases/: {current_link!r}"
        previous = output.first("previous_version")
        if previous is not None:
            previous_raw = "\t".join(previous)
    elif record[0] == "notlink":
        current_kind = "notlink"
        problem = f"{deploy_to}/current is not a symlink (a real folder or file)"

    last_op: Mapping[str, Any] | None = None
    last = output.first("last_op")
    if last is not None:
        try:
            parsed = json.loads("\t".join(last))
            last_op = parsed if isinstance(parsed, dict) else None
        except ValueError:
            notes.append("the last line of .deployer/history.jsonl is not valid JSON")

    free = (output.first("free_kb") or [""])[0]
    return HostState(
        host=host,
        hostname=hostname,
        deploy_to_exists=True,
        current_kind=current_kind,
        current_link=current_link,
        current=current,
        current_problem=problem,
        previous_version_raw=previous_raw,
        releases=releases,
        last_op=last_op,
        cached_digests=frozenset(fields[0] for fields in output.all("cached") if fields),
        free_kb=int(free) if free.isdigit() else None,
        notes=tuple(notes),
    )
