"""Per-host results as values (HostResult, Phase, OperationReport), plain progress lines, and
`shown`: the one boundary every output form passes text through (secrets redacted, host text
sanitized). The forms themselves are in `deployer.render` (text, JSON, JUnit, the live view)."""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from deployer.errors import EXIT_HOSTS_FAILED, EXIT_OK, EXIT_REFUSED
from deployer.revision import Revision
from deployer.sanitize import sanitize

OK = "ok"  # changed as planned and verified
UNCHANGED = "unchanged"  # already in the intended state
FAILED = "failed"
REFUSED = "refused"
SKIPPED = "skipped"  # would have acted, but the operation stopped before reaching it
REVERTED = "reverted"  # switched, then switched back to where it was (verified) because the rollout failed

GOOD_STATUSES = (OK, UNCHANGED)
log = logging.getLogger("deployer.progress")
REDACTED = "***"
_secrets: set[str] = set()


def set_secrets(values: list[str]) -> None:
    """Values (secret env, key passphrase) replaced by *** in everything this module writes."""
    _secrets.update(value for value in values if len(value) >= 3)


def shown(text: str) -> str:
    """Text as it may be shown anywhere (terminal, plain lines, JSON, logs): secrets replaced by ***,
    then control characters escaped and length capped (`deployer.sanitize`). The one boundary."""
    for value in sorted(_secrets, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return sanitize(text)


def shown_data(data: Any) -> Any:
    """`shown` applied to every string in JSON-like data (before encoding: escaping would hide values)."""
    if isinstance(data, str):
        return shown(data)
    if isinstance(data, dict):
        return {shown_data(key): shown_data(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [shown_data(item) for item in data]
    return data


@dataclass
class HostResult:
    host: str
    status: str
    before: str | None = None
    after: str | None = None
    verified: bool = False
    seconds: float = 0.0
    message: str = ""


@dataclass
class Phase:
    name: str
    seconds: float
    ok: bool
    detail: str = ""
    hosts: list[HostResult] = field(default_factory=list)  # per-host outcome of this phase (the drill's)


@dataclass
class OperationReport:
    operation: str
    target: str | None
    hosts: list[HostResult] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    refusal: str = ""
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # fleet-level failures (a local hook, a migration)
    reverted_to_start: bool = False  # a failed rollout put every switched host back (verified)
    plan: list[dict[str, Any]] = field(default_factory=list)  # per host: action, before, target, reason, prune
    connections: int = 0  # SSH connections opened by this operation
    sessions: dict[str, int] = field(default_factory=dict)  # exec sessions per host
    revision: dict[str, Any] = field(default_factory=dict)  # the target's version, commit, ... when known

    @property
    def ok(self) -> bool:
        return (
            not self.refusal
            and not self.problems
            and all(result.status in GOOD_STATUSES for result in self.hosts)
            and all(phase.ok for phase in self.phases if self.operation == "rollback-drill")
        )

    @property
    def exit_code(self) -> int:
        if self.ok:
            return EXIT_OK
        if self.problems or any(result.status in (FAILED, REVERTED) for result in self.hosts):
            return EXIT_HOSTS_FAILED
        return EXIT_REFUSED if self.refusal else EXIT_HOSTS_FAILED

    def verdict(self) -> str:
        if self.phases and self.operation == "rollback-drill":
            return self._drill_verdict()
        total = len(self.hosts)
        bad = [result for result in self.hosts if result.status not in GOOD_STATUSES]
        what = f"{self.operation} {self.target}" if self.target else self.operation
        label = Revision(str(self.revision.get("version", "")), str(self.revision.get("commit", ""))).label()
        if label and self.target:
            what += f" [{label}]"
        if self.ok:
            if not total:
                return f"{what}: OK (nothing to do)"
            changed = sum(result.status == OK for result in self.hosts)
            return f"{what}: OK on {total}/{total} hosts ({changed} changed and verified)"
        if self.refusal:
            return f"{what}: REFUSED: {self.refusal}"
        failed = [result for result in bad if result.status not in (REVERTED, SKIPPED)]
        skipped = [result for result in bad if result.status == SKIPPED]
        names = ", ".join(result.host for result in failed)
        text = f"{what}: FAILED on {len(failed)}/{total} hosts ({names})" if failed else f"{what}: FAILED"
        if skipped:
            text += f"; not switched: {', '.join(result.host for result in skipped)}"
        if self.problems:
            text += ": " + "; ".join(self.problems)
        if self.reverted_to_start:
            text += (
                "; every switched host was put back on its previous release (verified): the fleet is back where it was"
            )
        return text

    def _drill_verdict(self) -> str:
        timings = ", ".join(f"{phase.name} {phase.seconds:.2f}s" for phase in self.phases)
        if self.ok and all(phase.ok for phase in self.phases):
            return f"rollback-drill: PASS ({timings}); fleet on {self.target}"
        failed = next((phase for phase in self.phases if not phase.ok), None)
        where = f" in phase {failed.name}: {failed.detail}" if failed else ""
        return f"rollback-drill: FAIL{where} ({timings})"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["exit_code"] = self.exit_code
        data["verdict"] = self.verdict()
        return data


class Progress:
    """Plain, line-per-event progress on stderr, written only from the main thread."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet

    def say(self, message: str) -> None:
        log.info("%s", message)
        if not self.quiet:
            self.stream.write(shown(message) + "\n")
            self.stream.flush()

    def host(self, host: str, message: str) -> None:
        self.say(f"  {host}: {message}")

    def observe(self, host: str, event: str, detail: str) -> None:
        """A step event from a worker thread (see `deployer.fleet.Observer`); plain output shows none."""

    def close(self) -> None:
        """The operation is over (a live view stops here, leaving its last frame)."""
