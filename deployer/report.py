"""Per-host results as values (HostResult, Phase, OperationReport), plain progress lines, and
`shown`: the one boundary every output form passes text through (secrets redacted, host text
sanitized). The forms themselves are in `deployer.render` (text, JSON, JUnit, the live view)."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from deployer.errors import EXIT_HOSTS_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED
from deployer.redaction import Redactor
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
_redacted = Redactor()


def set_secrets(values: list[str]) -> None:
    """Values (secret env, key passphrase) replaced by *** in everything this module writes
    (also transformed: see `deployer.redaction`)."""
    _redacted.add(values)


def shown(text: str) -> str:
    """Text as it may be shown anywhere (terminal, plain lines, JSON, logs): secrets replaced by ***,
    then control characters escaped and length capped (`deployer.sanitize`). The one boundary."""
    return sanitize(_redacted(text))


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
    dry_run: bool = False  # only planned: nothing was changed
    signature: dict[str, Any] = field(default_factory=dict)  # who signed the artifact (principal, fingerprint)
    timeline: dict[str, Any] = field(default_factory=dict)  # per host, each phase's start and end (Timeline)
    watches: list[dict[str, Any]] = field(default_factory=list)  # each watch after a switch, with every sample
    cut_short: str = ""  # Ctrl-C ended a watch: the fleet was left as it was (exit 130)

    def __repr__(self) -> str:
        """What went wrong first (a failed assertion on `.ok` shows this, cut at a few hundred
        characters), then the verdict: not the whole record."""
        bad = [result for result in self.hosts if result.status not in GOOD_STATUSES]
        wrong = [f"{result.host} {result.status}: {result.message}" for result in bad]
        wrong += [f"problem: {problem}" for problem in self.problems]
        wrong += [f"phase {phase.name} failed: {phase.detail}" for phase in self.phases if not phase.ok]
        return f"<OperationReport {'; '.join([*wrong, self.verdict()])}>"

    @property
    def ok(self) -> bool:
        return (
            not self.refusal
            and not self.problems
            and not self.cut_short
            and all(result.status in GOOD_STATUSES for result in self.hosts)
            and all(phase.ok for phase in self.phases if self.operation == "rollback-drill")
        )

    @property
    def exit_code(self) -> int:
        if self.ok:
            return EXIT_OK
        if self.refusal:  # refused as a whole before anything changed, unreachable hosts or not
            return EXIT_REFUSED
        if self.cut_short:
            return EXIT_INTERRUPTED
        return EXIT_HOSTS_FAILED

    def verdict(self) -> str:
        if self.phases and self.operation == "rollback-drill":
            return self._drill_verdict()
        total = len(self.hosts)
        bad = [result for result in self.hosts if result.status not in GOOD_STATUSES]
        what = f"{self.operation} {self.target}" if self.target else self.operation
        label = Revision(str(self.revision.get("version", "")), str(self.revision.get("commit", ""))).label()
        if label and self.target:
            what += f" [{label}]"
        if self.dry_run and not self.refusal:
            changing = sum(row.get("action") in ("stage", "switch") for row in self.plan)
            return f"{what}: DRY RUN: would change {changing}/{total} hosts; nothing was changed"
        if self.ok:
            if not total:
                return f"{what}: OK (nothing to do)"
            changed = sum(result.status == OK for result in self.hosts)
            return f"{what}: OK on {total}/{total} hosts ({changed} changed and verified)"
        if self.refusal:
            return f"{what}: REFUSED: {self.refusal}"
        if self.cut_short and not bad:
            return f"{what}: WATCH CUT SHORT: {self.cut_short}"
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
            label = Revision(str(self.revision.get("version", "")), str(self.revision.get("commit", ""))).label()
            return f"rollback-drill: PASS ({timings}); fleet on {self.target}" + (f" [{label}]" if label else "")
        failed = next((phase for phase in self.phases if not phase.ok), None)
        where = f" in phase {failed.name}: {failed.detail}" if failed else ""
        return f"rollback-drill: FAIL{where} ({timings})"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["exit_code"] = self.exit_code
        data["verdict"] = self.verdict()
        return data


STEP_PHASES = {"gather": "gather", "stage": "stage", "switch": "switch", "finish": "finish", "run": "migrate"}
PROGRESS_PHASES = {
    "fetch-wait": "wait for a fetch slot",
    "fetching": "fetch",
    "validating": "validate",
    "before_switch": "hook before_switch",
    "after_switch": "hook after_switch",
    "after_rollback": "hook after_rollback",
    "health_check": "health",
    "reverting": "revert",
}


@dataclass
class _Outcome:
    ok: bool = True


class Timeline:
    """When each host went through each phase (connect, gather with the lock, stage, validate,
    switch, hooks, health, finish), from the fleet's step events, in seconds since the start;
    batches and sections (the drill's phases) as fleet-level marks. Thread-safe: workers report."""

    def __init__(self) -> None:
        self.started = time.time()
        self._origin = time.monotonic()
        self._lock = threading.Lock()
        self._hosts: dict[str, list[dict[str, Any]]] = {}
        self._open: dict[str, dict[str, dict[str, Any]]] = {}  # host -> level ("step"/"part") -> phase
        self.marks: list[dict[str, Any]] = []

    def _now(self) -> float:
        return round(time.monotonic() - self._origin, 3)

    def _begin(self, host: str, level: str, phase: str, detail: str = "") -> None:
        self._end(host, level, True)
        entry = {"phase": phase, "start": self._now(), "end": None, "ok": None}
        if detail:
            entry["detail"] = detail
        self._hosts.setdefault(host, []).append(entry)
        self._open.setdefault(host, {})[level] = entry

    def _end(self, host: str, level: str, ok: bool) -> None:
        entry = self._open.get(host, {}).pop(level, None)
        if entry is not None:
            entry["end"], entry["ok"] = self._now(), ok

    def observe(self, host: str, event: str, detail: str) -> None:
        with self._lock:
            if event == "connecting":
                self._begin(host, "step", "connect")
            elif event == "connected":
                self._end(host, "step", True)
            elif event == "connect-failed":
                self._end(host, "step", False)
            elif event == "step":
                name = detail.split(" ", 1)[0]
                self._end(host, "part", True)
                self._begin(host, "step", STEP_PHASES.get(name, name))
            elif event == "progress" and detail in PROGRESS_PHASES:
                self._begin(host, "part", PROGRESS_PHASES[detail])
            elif event in ("step-ok", "step-failed"):
                ok = event == "step-ok"
                self._end(host, "part", ok)
                self._end(host, "step", ok)

    @contextmanager
    def span(self, hosts: list[str], phase: str) -> Iterator[_Outcome]:
        """A phase the controller runs for these hosts outside their sessions (the drill's testinfra
        checks): a bar on each host's row, so the time is shown, not a blank gap."""
        outcome = _Outcome()
        with self._lock:
            for host in hosts:
                self._begin(host, "step", phase)
        try:
            yield outcome
        finally:
            with self._lock:
                for host in hosts:
                    self._end(host, "step", outcome.ok)

    def mark(self, kind: str, name: str, hosts: list[str] | None = None) -> None:
        with self._lock:
            self.marks.append({"kind": kind, "name": name, "at": self._now(), "hosts": sorted(hosts or [])})

    def data(self) -> dict[str, Any]:
        with self._lock:
            return {
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
                "seconds": self._now(),
                "hosts": {host: [dict(entry) for entry in entries] for host, entries in sorted(self._hosts.items())},
                "marks": [dict(mark) for mark in self.marks],
            }


class Progress:
    """Plain, line-per-event progress on stderr, written only from the main thread; it also keeps
    the operation's timeline (every progress form does: the report carries it)."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.timeline = Timeline()

    def say(self, message: str) -> None:
        log.info("%s", message)
        if not self.quiet:
            self.stream.write(shown(message) + "\n")
            self.stream.flush()

    def host(self, host: str, message: str) -> None:
        self.say(f"  {host}: {message}")

    def observe(self, host: str, event: str, detail: str) -> None:
        """A step event from a worker thread (see `deployer.connection.Observer`): kept in the timeline."""
        self.timeline.observe(host, event, detail)

    def watching(self, message: str) -> None:
        """The watch's latest sample round (a countdown): a line here, redrawn in place by a live view."""
        self.say(message)

    def batch(self, number: int, total: int, hosts: list[str]) -> None:
        """A rollout batch starts switching these hosts."""
        self.timeline.mark("batch", f"{number}/{total}", hosts)

    def section(self, name: str) -> None:
        """A part of a longer operation starts (the drill's deploy, rollback, redeploy)."""
        self.timeline.mark("section", name)

    def interrupted(self) -> None:
        """Ctrl-C: what follows (where each host ended up) is printed as lines that stay on the screen."""

    def close(self) -> None:
        """The operation is over (a live view stops here, leaving its last frame)."""
