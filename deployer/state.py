"""A host's deployment state as data, parsed from the `gather` script's records.

Everything read from a host is treated as untrusted data: link targets and `previousVersion`
are only turned into release ids when they name a folder directly inside `<deploy_to>/releases/`.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deployer.release import is_release_id
from deployer.revision import COMMIT, VERSION, Revision
from deployer.scripts import ScriptOutput

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_VALIDATING = "validating"
STATUS_UNMANAGED = "unmanaged"
STATUS_DAMAGED = "damaged"  # its metadata file is empty or torn (a power cut): never switched to
DAMAGED_FILES = {
    "previous_version": "releases/{name}/previousVersion",
    "meta": ".deployer/meta/{name}",
    "bad": ".deployer/bad/{name}",
    "pin": ".deployer/pin",
    "schema": ".deployer/schema",
}
USABLE_STATUSES = frozenset({STATUS_OK, STATUS_UNMANAGED})
PRINCIPAL = re.compile(r"[A-Za-z0-9@._+=-]{1,256}")  # as remote verify_signature accepts them
FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
SIGNERS = re.compile(r"(?:[0-9a-f]{64}|-)(?: (?:[0-9a-f]{64}|-)){2}")


@dataclass(frozen=True)
class ReleaseInfo:
    release_id: str
    status: str
    digest: str
    staged_at: str = ""  # controller's UTC time when it was staged (never a file mtime)
    schema: int | None = None  # schema_version from the release's manifest
    min_schema: int | None = None
    previous: str | None = None  # release id its previousVersion names
    bad: Mapping[str, Any] | None = None  # why it is known to be bad (who, when, why)
    version: str = ""  # the version label recorded when it was staged ("" when none was known)
    commit: str = ""  # the git commit recorded when it was staged
    signer: str = ""  # the principal whose signature this host verified when it staged it ("" unsigned)
    signer_fingerprint: str = ""  # that signer's key, SHA256:...

    @property
    def revision(self) -> Revision:
        return Revision(version=self.version, commit=self.commit)

    @property
    def usable(self) -> bool:
        return self.status in USABLE_STATUSES

    @property
    def order_key(self) -> tuple[str, str]:
        """Deployment order: staging time recorded by the tool, then the id (ids start with a UTC time)."""
        return (self.staged_at, self.release_id)


@dataclass(frozen=True)
class LockState:
    """The fleet lock as found on one host."""

    taken_by_us: bool
    info: Mapping[str, Any]  # empty when the lock folder has no readable details
    token: str = ""  # the holder's token: lets a stale lock be removed only if it is still that lock

    def describe(self) -> str:
        if not self.info:
            return "a lock without details (being taken right now, or left by a run killed while taking it)"
        info = self.info
        text = f"{info.get('operation', '?')} by {info.get('user', '?')}@{info.get('controller', '?')}"
        text += f" (pid {info.get('pid', '?')}) since {info.get('time', '?')}"
        if info.get("message"):
            text += f": {info['message']}"
        return text


@dataclass(frozen=True)
class SchemaRecord:
    """The database schema the fleet last recorded: version, its compatibility floor, and by which release."""

    version: int
    min_compatible: int
    release: str


@dataclass(frozen=True)
class HostState:
    """What `gather` found on one host."""

    host: str
    hostname: str = ""
    deploy_to: str = ""  # where this host deploys ("" in tests that do not care: the plan's default)
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
    lock: LockState | None = None
    pin: Mapping[str, Any] | None = None
    schema: SchemaRecord | None = None
    history: tuple[Mapping[str, Any], ...] = ()
    notes: tuple[str, ...] = ()
    damaged: tuple[str, ...] = ()  # state files found empty or torn (a power cut), never read as data
    missing_tools: tuple[str, ...] = ()  # required tools the host lacks (docs/hosts.md: "Host requirements")
    writable: str = ""  # "yes"/"no": the deploy user can write deploy_to (or where it would be made)
    signers: str = ""  # sha256 of this host's own copy of who may sign (host_signers.HostCopy.digests); "" none

    def lacks_tools(self) -> str:
        """Why nothing can be changed on this host for want of tools; "" when it has them all."""
        if not self.missing_tools:
            return ""
        return f'host {self.host} has no {", no ".join(self.missing_tools)} (see docs/hosts.md, "Host requirements")'

    def bad_releases(self) -> dict[str, Mapping[str, Any]]:
        return {rid: info.bad for rid, info in self.releases.items() if info.bad is not None}

    def previous_version(self, deploy_to: str = "") -> tuple[str | None, str]:
        """(release id, problem) recorded in current's previousVersion; (None, "") when empty.

        The host's own deploy_to is used when known; `deploy_to` is the fallback.
        """
        if self.current is not None and f"releases/{self.current}/previousVersion" in self.damaged:
            return None, "previousVersion is damaged (empty or torn: a power cut?); host left untouched"
        if self.current is None or self.previous_version_raw is None:
            return None, ""
        return parse_previous_version(self.previous_version_raw, self.deploy_to or deploy_to)


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


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):  # host text: a record nested 100,000 deep is damage, not a crash
        return None
    return parsed if isinstance(parsed, dict) else None


def _int_or_none(text: str) -> int | None:
    """A non-negative decimal number written by the tool; anything else (host text) is None."""
    return int(text) if 0 < len(text) <= 18 and text.isascii() and text.isdigit() else None


def _parse_lock(output: ScriptOutput) -> LockState | None:
    record = output.first("lock")
    if record is None:
        return None
    if record[0] == "taken":
        return LockState(True, {})
    token = record[1] if len(record) > 1 else ""
    return LockState(False, _json_object(record[2]) or {} if len(record) > 2 else {}, token)


def _parse_releases(output: ScriptOutput, deploy_to: str, notes: list[str]) -> dict[str, ReleaseInfo]:
    previous = {fields[0]: fields[1] for fields in output.all("release_previous")}
    bad = {fields[0]: _json_object(fields[1]) or {"why": "unreadable mark"} for fields in output.all("bad")}
    releases: dict[str, ReleaseInfo] = {}
    for record in output.all("release"):
        release_id = record[0]
        if not is_release_id(release_id):
            notes.append(f"ignored a folder in releases/ with an invalid name: {release_id!r}")
            continue
        # The meta line: status digest staged_at schema min_schema version commit principal
        # fingerprint (space-separated, as stage writes it; "-" for none; older releases have fewer).
        meta = record[1].split(" ")
        fields = [release_id, *meta[:9]] + [""] * max(0, 9 - len(meta))
        signer, signer_fingerprint = fields[8], fields[9]
        if not (PRINCIPAL.fullmatch(signer) and FINGERPRINT.fullmatch(signer_fingerprint)):
            signer = signer_fingerprint = ""
        version = fields[6] if VERSION.match(fields[6]) else ""
        commit = fields[7] if COMMIT.match(fields[7]) else ""
        status = fields[1] or STATUS_UNMANAGED
        digest = fields[2] if fields[2] != "-" else ""
        staged_at = fields[3] if fields[3] != "-" else ""
        previous_id = None
        if release_id in previous:
            previous_id, _problem = parse_previous_version(previous[release_id], deploy_to)
        releases[release_id] = ReleaseInfo(
            release_id,
            status,
            digest,
            staged_at=staged_at,
            schema=_int_or_none(fields[4]),
            min_schema=_int_or_none(fields[5]),
            previous=previous_id,
            bad=bad.get(release_id),
            version=version,
            commit=commit,
            signer=signer,
            signer_fingerprint=signer_fingerprint,
        )
    return releases


def _parse_signers(output: ScriptOutput) -> str:
    record = output.first("signers")
    text = record[0] if record else ""
    return text if SIGNERS.fullmatch(text) else ""


def _damaged(output: ScriptOutput, current: str | None) -> tuple[str, ...]:
    """The state files gather found empty or torn, as paths inside deploy_to."""
    found = []
    for what, name in output.all("damaged"):
        template = DAMAGED_FILES.get(what)
        if template is None or (name != what and not is_release_id(name) and name != "current"):
            continue
        if name == "current" and current is None:
            continue
        found.append(template.format(name=current if name == "current" else name))
    return tuple(sorted(set(found)))


def parse_state(host: str, output: ScriptOutput, deploy_to: str) -> HostState:
    """Build a HostState from gather's records (each part parsed by its own small reader below)."""
    notes: list[str] = list(output.warnings())  # e.g. a lock cleared, or seen, from before the host's last boot
    hostname = (output.first("hostname") or [""])[0]
    lock = _parse_lock(output)
    missing = tuple(fields[0] for fields in output.all("missing") if fields)
    writable = (output.first("writable") or [""])[0]
    if (output.first("deploy_to") or ["missing"])[0] != "present":
        return HostState(
            host=host,
            hostname=hostname,
            deploy_to=deploy_to,
            lock=lock,
            missing_tools=missing,
            writable=writable,
            notes=tuple(notes),
        )
    releases = _parse_releases(output, deploy_to, notes)
    current = _parse_current(output, deploy_to)
    last_op = _parse_last_op(output, notes)  # the notes keep the order of the records they are about
    history = _parse_history(output, notes)
    pin = _parse_pin(output, notes)
    schema = _parse_schema(output, notes)
    free = (output.first("free_kb") or [""])[0]
    return HostState(
        host=host,
        hostname=hostname,
        deploy_to=deploy_to,
        deploy_to_exists=True,
        current_kind=current.kind,
        current_link=current.link,
        current=current.release,
        current_problem=current.problem,
        previous_version_raw=current.previous_raw,
        damaged=_damaged(output, current.release),
        releases=releases,
        last_op=last_op,
        cached_digests=frozenset(fields[0] for fields in output.all("cached") if fields),
        free_kb=_int_or_none(free),
        lock=lock,
        pin=pin,
        schema=schema,
        history=history,
        notes=tuple(notes),
        missing_tools=missing,
        writable=writable,
        signers=_parse_signers(output),
    )


@dataclass(frozen=True)
class _Current:
    kind: str = "missing"  # "link" | "missing" | "notlink"
    link: str = ""
    release: str | None = None
    problem: str = ""
    previous_raw: str | None = None


def _parse_current(output: ScriptOutput, deploy_to: str) -> _Current:
    """`current`: the release it resolves to, only when that is a folder directly inside releases/."""
    record = output.first("current") or ["missing"]
    if record[0] == "notlink":
        return _Current("notlink", problem=f"{deploy_to}/current is not a symlink (a real folder or file)")
    if record[0] != "link":
        return _Current()
    link = record[1] if len(record) > 1 else ""
    releases_dir = (output.first("releases_dir") or [""])[0]
    resolved = (output.first("current_resolved") or [""])[0]
    previous = output.first("previous_version")
    previous_raw = previous[0] if previous is not None else None
    if output.first("current_dangling") is not None:
        return _Current("link", link, None, f"current is a dangling link to {link!r}", previous_raw)
    if releases_dir and posixpath.dirname(resolved) == releases_dir and is_release_id(posixpath.basename(resolved)):
        return _Current("link", link, posixpath.basename(resolved), "", previous_raw)
    return _Current("link", link, None, f"current points outside {deploy_to}/releases/: {link!r}", previous_raw)


def _parse_last_op(output: ScriptOutput, notes: list[str]) -> Mapping[str, Any] | None:
    last = output.first("last_op")
    if last is None:
        return None
    last_op = _json_object(last[0])
    if last_op is None:
        notes.append("the last switch recorded in .deployer/history.jsonl is not valid JSON")
    return last_op


def _parse_history(output: ScriptOutput, notes: list[str]) -> tuple[Mapping[str, Any], ...]:
    entries = [_json_object(fields[0]) for fields in output.all("history")]
    unreadable = sum(1 for entry in entries if entry is None)
    if unreadable:
        notes.append(f"skipped {unreadable} unreadable line(s) in .deployer/history.jsonl")
    return tuple(entry for entry in entries if entry is not None)


def _parse_pin(output: ScriptOutput, notes: list[str]) -> Mapping[str, Any] | None:
    record = output.first("pin")
    if record is None:
        return None
    pin = _json_object(record[0])
    if pin is None or not is_release_id(str(pin.get("release", ""))):
        notes.append(".deployer/pin is unreadable; treating the fleet as pinned to an unknown release")
        return {"release": None, "why": "unreadable pin file"}
    return pin


def _parse_schema(output: ScriptOutput, notes: list[str]) -> SchemaRecord | None:
    record = output.first("schema")
    if record is None:
        return None
    fields = record[0].split(" ") + ["", "", ""]
    version, floor = _int_or_none(fields[0]), _int_or_none(fields[1])
    if version is None or floor is None:
        notes.append(".deployer/schema is unreadable; ignoring it")
        return None
    return SchemaRecord(version, floor, fields[2])
