"""The remote protocol: how the scripts in `deployer/remote/` answer Python. Defined here, once.

A script's standard output is a sequence of records, each one line ended by a newline (`\\n`,
and nothing else: `\\r`, `\\v`, `\\f`, `\\x1c-\\x1e`, `\\x85`, `\\u2028` are data):

    @NAME<TAB>FIELD<TAB>FIELD...

Every field is escaped by `emit` in `lib.sh`: backslash -> `\\\\`, tab -> `\\t`, newline -> `\\n`.
So text that comes from a host (file contents, link targets, folder names, command output) can
never end a field or a record, whatever bytes it holds. Standard error never carries records: it is
diagnostics for humans. Parsing is strict: an unknown record name, a wrong number of fields or a
bad escape makes the whole answer a `ProtocolError` (the host is reported, nothing is trusted).

Success is a positive record (`staged`, `switched`, `unlocked`, `pinned`, ...), never the exit
status alone. `RECORDS` lists every record a script may print, with its fields; a unit test checks
that every `emit` in the scripts names a record declared here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from deployer.errors import HostError

# name -> field names; a trailing "*" field takes zero or more values (always the last one).
RECORDS: dict[str, tuple[str, ...]] = {
    # every script
    "error": ("code", "message"),
    "warning": ("message",),
    "progress": ("what",),  # the step a script is on (validating, a hook, health_check), for the live view
    # gather
    "hostname": ("name",),
    "deploy_to": ("presence", "path*"),
    "releases_dir": ("path",),
    "current": ("kind", "link*"),
    "current_resolved": ("path",),
    "current_dangling": (),
    "previous_version": ("text",),
    "previous_version_missing": (),
    "release": ("id", "meta"),
    "release_previous": ("id", "text"),
    "bad": ("id", "json"),
    "pin": ("json",),
    "schema": ("text",),
    "last_op": ("json",),
    "history": ("json",),
    "cached": ("digest",),
    "kept": ("file", "sum*"),  # a copy of a script this host keeps, and what cksum or sha256sum says of it
    "free_kb": ("kb",),
    "writable": ("answer", "folder"),  # can the deploy user write deploy_to (or the folder that would hold it)
    "missing": ("tool",),
    "damaged": ("what", "name"),  # a state file that is empty or torn (a power cut): never read as data
    "lock": ("state", "token*"),
    # stage
    "staged": ("id", "digest"),
    "signers": ("digests",),  # sha256 of the host's own allowed_signers, revoked keys, policy ("-": none)
    "signers_removed": (),  # place-signers removed a host's copy (the inventory has no `signatures` for it)
    "signers_placed": (),  # staging placed the inventory's allowed signers on a host that had none
    "signed": ("principal", "fingerprint"),  # who signed the release, as the host's own ssh-keygen verified
    "validate_failed": ("code", "tail"),
    # switch
    "after": ("link", "resolved"),
    "already": ("link",),
    "switched": ("before", "after"),
    "history_written": (),
    "held": (),  # the batch did not pass: the lock stays and nothing is pruned (a revert follows)
    "hook": ("name", "result", "code", "tail*"),
    "health": ("result", "attempt", "code*"),
    # finish (and the tail of switch)
    "marked_bad": ("id",),
    "pinned": (),
    "unpinned": (),
    "not_pinned": (),
    "pruned": ("id",),
    "unlocked": (),
    "lock_absent": (),
    "lock_changed": ("token",),
    "finished": (),
    # run
    "ran": ("name", "code", "tail*"),
}

MAX_OUTPUT_BYTES = 16 * 1024 * 1024  # a host's answer to one script: more is refused, never stored
_ESCAPE = re.compile(r"\\(.?)", re.DOTALL)
_UNESCAPED = {"\\": "\\", "t": "\t", "n": "\n"}


class ProtocolError(HostError):
    """A host's answer does not follow the protocol (a forged, torn or oversized answer)."""

    def __init__(self, host: str, step: str, problem: str) -> None:
        self.step = step
        super().__init__(host, f"{step}: the host's answer is not valid ({problem}); nothing in it was used")


def unescape(text: str) -> str:
    """A field as the script meant it; ValueError on an escape `emit` never writes."""

    def one(match: re.Match[str]) -> str:
        value = _UNESCAPED.get(match.group(1))
        if value is None:
            raise ValueError(f"bad escape {match.group(0)!r}")
        return value

    return _ESCAPE.sub(one, text) if "\\" in text else text


def escape(text: str) -> str:
    """What `emit` does to a field (for tests and for building expected records)."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


@dataclass
class ScriptOutput:
    """One script's answer: its records, the free text of stdout, and stderr."""

    records: list[tuple[str, list[str]]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    stderr: str = ""

    def first(self, key: str) -> list[str] | None:
        for record_key, fields in self.records:
            if record_key == key:
                return fields
        return None

    def all(self, key: str) -> list[list[str]]:
        return [fields for record_key, fields in self.records if record_key == key]

    def has(self, key: str) -> bool:
        return self.first(key) is not None

    def warnings(self) -> list[str]:
        return [fields[0] for fields in self.all("warning")]

    def error_message(self) -> str:
        error = self.first("error")
        if error is not None:
            return error[1]
        lines = [line for line in self.stderr.split("\n") + self.text if line.strip()]
        return lines[-1].strip() if lines else "no output"

    def tail(self, lines: int = 20) -> str:
        return "\n".join((self.text + self.stderr.split("\n"))[-lines:]).strip("\n")


def parse_record(line: str) -> tuple[str, list[str]]:
    """One record line (without its newline) -> (name, fields); ValueError when it breaks the protocol."""
    name, *raw = line[1:].split("\t")
    spec = RECORDS.get(name)
    if spec is None:
        raise ValueError(f"unknown record {name[:40]!r}")
    fields = [unescape(value) for value in raw]
    variadic = bool(spec) and spec[-1].endswith("*")
    fixed = len(spec) - 1 if variadic else len(spec)
    if len(fields) < fixed or (not variadic and len(fields) > fixed):
        least = "at least " if variadic else ""
        raise ValueError(f"record {name!r} has {len(fields)} field(s), expected {least}{fixed}")
    return name, fields


def parse_output(stdout: str, stderr: str = "", host: str = "", step: str = "") -> ScriptOutput:
    """Split a script's stdout into records and free text, strictly (see the module docstring).

    Lines are split on "\\n" only; a last line without its newline is torn (the script was cut
    off) and kept as free text, never as a record.
    """
    output = ScriptOutput(stderr=stderr)
    lines = stdout.split("\n")
    complete, torn = lines[:-1], lines[-1]
    for line in complete:
        if line.startswith("@"):
            try:
                output.records.append(parse_record(line))
            except ValueError as exc:
                raise ProtocolError(host, step or "remote step", str(exc)) from None
        else:
            output.text.append(line)
    if torn:
        output.text.append(torn)
    return output
