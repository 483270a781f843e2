"""switch: the one helper deploy, rollback and automatic revert use to point `current` at a release
(hooks, atomic rename, read-back, records, health check, prune, unlock); one session per host."""

from __future__ import annotations

import posixpath
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deployer.connection import HostConnection
from deployer.errors import HostError, StepFailed
from deployer.lock import utc_now
from deployer.phases.run import Run, history_line, schema_text, whole_seconds
from deployer.plan import HostPlan
from deployer.protocol import ProtocolError
from deployer.revision import Revision
from deployer.scripts import (
    EXIT_AFTER_ROLLBACK,
    EXIT_AFTER_SWITCH,
    EXIT_BEFORE_SWITCH,
    EXIT_HEALTH,
    RunningScript,
    ScriptResult,
    start_script,
)
from deployer.state import SchemaRecord

SWITCHED_BUT_FAILING = {
    EXIT_AFTER_SWITCH: "after_switch hook",
    EXIT_HEALTH: "health check",
    EXIT_AFTER_ROLLBACK: "after_rollback hook",
}


@dataclass
class Switched:
    """A host whose `current` now points where the switch put it (read back)."""

    link: str
    resolved: str
    seconds: float
    failing: str = ""  # which check failed after the switch ("health check", ...), with its output
    unlocked: bool = False
    pruned: list[str] = field(default_factory=list)
    health: str = ""
    switched: bool = True  # False: it was already there (a revert rerun): nothing was recorded
    confirmed: frozenset[str] = frozenset()  # records the host confirmed: pinned, marked_bad, history_written
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SwitchRequest:
    """What a switch phase does on each host beyond pointing `current` at the target."""

    mode: str  # deploy | rollback | revert
    operation: str  # what the history calls it
    unlock: bool = False  # release our lock on success (or always, for rollbacks and reverts)
    bad_on_failure: str = ""  # deploys: JSON of the bad mark a host writes when its own checks fail after switching
    schema: SchemaRecord | None = None
    pin: str = ""  # JSON of the pin to set
    unpin: bool = False
    mark_bad: str = ""
    bad_info: str = ""
    prune: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # the lock's release and the pruning wait for the whole batch's verdict (a deploy's last batch:
    # a revert may follow), the hosts waiting for it in their sessions
    verdict: bool = False


def _switch_options(run: Run, host_plan: HostPlan, request: SwitchRequest) -> tuple[dict[str, Any], float]:
    inventory = run.inventory
    host = inventory.host(host_plan.host)
    target = host_plan.target or ""
    health = inventory.health_check
    options: dict[str, Any] = {
        "now": utc_now(),
        "target": target,
        "expected": host_plan.expected_link,
        "mode": request.mode,
        "operation": request.operation,
        "previous": host_plan.previous_version if request.mode == "deploy" else "",
        "history": history_line(
            request.operation,
            host_plan.before,
            target,
            run.message,
            run.run_id,
            run.drill_phase,
            run.revision_of(target),
        ),
        "run": run.run_id,
        "hook_timeout": whole_seconds(inventory.timeouts.hook),
        "schema": schema_text(request.schema),
        "pin": request.pin,
        "unpin": "1" if request.unpin else "",
        "mark_bad": request.mark_bad,
        "bad_info": request.bad_info,
        "bad_on_failure": request.bad_on_failure,
        "prune": " ".join(request.prune.get(host_plan.host, ())),
        "unlock": run.lock.token if request.unlock else "",
        "fence": run.lock.token,
        "unlock_always": "1" if request.unlock and request.mode != "deploy" else "",
        "env": "1" if run.environment else "",
        "sudo": "1" if host.sudo else "",
    }
    hooks = ("before_switch", "after_switch") if request.mode == "deploy" else ("after_rollback",)
    for hook in hooks:
        options[hook] = inventory.hook(hook)
    timeout = inventory.timeouts.command + inventory.timeouts.hook * len([h for h in hooks if inventory.hook(h)])
    if health is not None:
        options.update(
            health=health.command,
            health_timeout=whole_seconds(health.timeout),
            health_retries=str(health.retries),
            health_interval=f"{health.interval:g}",
            health_expect=expected_in_health_output(health.expect, target, run.revision_of(target)),
        )
        timeout += health.worst_case_seconds
    return options, timeout


def switch_host(connection: HostConnection, run: Run, host_plan: HostPlan, request: SwitchRequest) -> Switched:
    """Run the shared switch helper on one host and check its read-back against the plan."""
    return switched(connection, run, host_plan, start_switch(connection, run, host_plan, request).result())


def start_switch(connection: HostConnection, run: Run, host_plan: HostPlan, request: SwitchRequest) -> RunningScript:
    """Start the switch helper on one host; with `request.verdict`, its session waits for the batch's
    verdict once the host passed its checks (`RunningScript.waits`)."""
    options, timeout = _switch_options(run, host_plan, request)
    if request.verdict:
        options["await_verdict"] = "1"
    return start_script(
        connection,
        "switch",
        run.inventory.deploy_to_of(connection.host),
        session_timeout=timeout,
        upload=[run.environment],
        verdict=request.verdict,
        **options,
    )


def switched(connection: HostConnection, run: Run, host_plan: HostPlan, result: ScriptResult) -> Switched:
    """One host's switch, judged from its answer: its read-back against the plan, its checks."""
    target = host_plan.target or ""
    output = result.output
    status = result.exit_status
    name = connection.host.name
    if status not in (0, *SWITCHED_BUT_FAILING):
        step = "before_switch hook" if status == EXIT_BEFORE_SWITCH else "switch"
        message = output.error_message()
        hook = output.first("hook")
        if status == EXIT_BEFORE_SWITCH and hook and len(hook) > 3 and hook[3]:
            message += f": {hook[3]}"
        raise StepFailed(name, step, status, message)
    link, resolved = ((output.first("after") or []) + ["", ""])[:2]
    if link != f"releases/{target}" or posixpath.basename(resolved) != target:
        raise StepFailed(name, "verification", 0, f"current reads back as {link!r} ({resolved!r}), not {target}")
    if not output.has("switched") and not output.has("already"):
        raise ProtocolError(name, "switch", "neither a switched nor an already record")
    outcome = Switched(
        link,
        resolved,
        result.seconds,
        unlocked=output.has("unlocked"),
        pruned=[fields[0] for fields in output.all("pruned")],
        switched=output.has("switched"),
        confirmed=frozenset(key for key in ("pinned", "marked_bad", "history_written") if output.has(key)),
        warnings=output.warnings(),
    )
    if outcome.switched and "history_written" not in outcome.confirmed and not outcome.warnings:
        outcome.warnings.append("the host did not confirm writing its history line")
    health = output.first("health")
    if health and health[0] == "ok":
        outcome.health = f"healthy (attempt {health[1] if len(health) > 1 else '?'})"
    if status in SWITCHED_BUT_FAILING:
        what = SWITCHED_BUT_FAILING[status]
        detail = ""
        if status == EXIT_HEALTH and health and len(health) > 3:
            detail = f" after {health[1]} attempt(s), exit {health[2]}: {health[3]}".rstrip(": ")
        else:
            hook = next((fields for fields in output.all("hook") if len(fields) > 1 and fields[1] == "failed"), None)
            if hook:
                detail = f" (exit {hook[2]})" + (f": {hook[3]}" if len(hook) > 3 and hook[3] else "")
        outcome.failing = f"{what} failed{detail}"
    return outcome


def switch(run: Run, hosts: list[HostPlan], request: SwitchRequest) -> dict[str, Switched | HostError]:
    """The switch phase on `hosts`, in parallel; outcomes per host.

    With `request.verdict` (a deploy's last batch), each host that passed its checks waits in its
    session, holding no worker, until every session of the batch ended or waits: the verdict is
    "commit" when all wait (they prune and release the lock), else "hold" (they keep both, for the
    revert). The verdict is given to every waiting host at once, then their sessions are read to
    their ends."""
    by_name = {host_plan.host: host_plan for host_plan in hosts}
    outcomes: dict[str, Switched | HostError] = {}

    def shown(name: str, outcome: Switched | HostError) -> None:
        _shown(run, name, outcome)
        outcomes[name] = outcome

    if not request.verdict:
        for host, outcome in run.fleet.map(
            lambda c: switch_host(c, run, by_name[c.host.name], request), [run.inventory.host(n) for n in by_name]
        ):
            shown(host.name, outcome)
        return outcomes
    waiting = _Waiting()

    def begin(connection: HostConnection) -> Switched | None:
        session = start_switch(connection, run, by_name[connection.host.name], request)
        if waiting.keep(connection.host.name, session):
            return None
        return switched(connection, run, by_name[connection.host.name], session.result())

    def end(connection: HostConnection) -> Switched:
        return switched(connection, run, by_name[connection.host.name], waiting.take(connection.host.name).result())

    try:
        for host, begun in run.fleet.map(begin, [run.inventory.host(name) for name in by_name]):
            if begun is not None:
                shown(host.name, begun)
        # commit only if every host waits, and still does: a session that ended while it waited
        # (killed, its connection lost) holds the whole batch
        commit = len(waiting.sessions) == len(by_name) and all(s.still_waiting() for s in waiting.sessions.values())
        for name, session in list(waiting.sessions.items()):
            try:
                session.answer(commit)
            except HostError as error:
                waiting.take(name)
                shown(name, error)
        for host, result in run.fleet.map(end, [run.inventory.host(name) for name in waiting.sessions]):
            shown(host.name, result)
    finally:
        waiting.close()
    return outcomes


class _Waiting:
    """The switch sessions of a batch waiting for its verdict, by host. Whatever is still here when
    the phase ends (Ctrl-C, an error) is closed: its host sees its stdin end and holds."""

    def __init__(self) -> None:
        self.sessions: dict[str, RunningScript] = {}
        self.closed = False
        self.lock = threading.Lock()

    def keep(self, name: str, session: RunningScript) -> bool:
        """Read `name`'s session until it ends or waits; whether it waits (then it is kept here)."""
        if not session.waits():
            return False
        with self.lock:
            if not self.closed:
                self.sessions[name] = session
                return True
        session.close()
        raise HostError(name, "the switch phase stopped before its batch's verdict (the host holds)")

    def take(self, name: str) -> RunningScript:
        with self.lock:
            session = self.sessions.pop(name, None)
        if session is None:  # closed meanwhile (Ctrl-C)
            raise HostError(name, "the switch phase stopped before this host's end was read")
        return session

    def close(self) -> None:
        with self.lock:
            self.closed = True
            left, self.sessions = list(self.sessions.values()), {}
        for session in left:
            session.close()


def _shown(run: Run, name: str, outcome: Switched | HostError) -> None:
    """One host's switch outcome: its lock's release noted, its line in the progress."""
    if isinstance(outcome, HostError):
        run.progress.host(name, f"FAILED: {outcome.reason}")
        return
    if outcome.unlocked:
        run.lock.held.discard(name)
    text = f"current -> {outcome.link} (verified)"
    if outcome.health:
        text += f", {outcome.health}"
    if outcome.pruned:
        text += f", pruned {len(outcome.pruned)} old release(s)"
    if outcome.failing:
        text += f"; FAILED: {outcome.failing}"
    run.progress.host(name, text)


def expected_in_health_output(expect: str, target: str, revision: Revision) -> str:
    """What the health check's output must contain on a host just switched to `target` ("" for
    nothing). A version or commit the release was not recorded with cannot be found: the check
    then fails, saying so, rather than passing a server it cannot tell apart."""
    if expect == "release":
        return target
    if expect == "version":
        return revision.version or f"(no version recorded for {target})"
    if expect == "commit":
        return revision.commit or f"(no commit recorded for {target})"
    return ""
