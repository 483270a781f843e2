"""The operations: deploy, rollback, rollback drill, status.

Each follows the same flow over one `Fleet` (one connection per host for the whole operation):
gather (one `gather` session per host) -> plan (pure, `deployer.plan`) -> show -> act (one
`stage` and/or one `switch` session per host) -> verify (from what the switch read back) -> report.
"""

from __future__ import annotations

import getpass
import json
import posixpath
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from deployer import plan as planning
from deployer.errors import HostError, PlanRefused, StepFailed
from deployer.fleet import Fleet, HostConnection, MappedArtifact
from deployer.inventory import Inventory
from deployer.plan import HostPlan, Plan
from deployer.release import Artifact, PreparedArtifact, check_release_id, new_release_id
from deployer.report import (
    FAILED,
    OK,
    REFUSED,
    SKIPPED,
    UNCHANGED,
    HostResult,
    OperationReport,
    Phase,
    Progress,
)
from deployer.scripts import EXIT_VALIDATE, command_line, parse_output
from deployer.state import HostState, parse_state

Unreachable = dict[str, str]


@dataclass(frozen=True)
class Options:
    accept_new_host_keys: bool = False
    parallel: int | None = None
    dry_run: bool = False


def _open_fleet(inventory: Inventory, options: Options) -> Fleet:
    return Fleet(inventory, accept_new_host_keys=options.accept_new_host_keys, parallel=options.parallel)


def gather(fleet: Fleet, progress: Progress) -> tuple[dict[str, HostState], Unreachable]:
    """Connect (if needed) and read every host's state: one `gather` session per host."""
    deploy_to = fleet.inventory.deploy_to
    command = command_line("gather", deploy_to)

    def work(connection: HostConnection) -> HostState:
        result = connection.run(command)
        output = parse_output(result.output)
        if result.exit_status != 0:
            raise StepFailed(connection.host.name, "reading state", result.exit_status, output.error_message())
        return parse_state(connection.host.name, output, deploy_to)

    states: dict[str, HostState] = {}
    unreachable: Unreachable = {}
    for host, outcome in fleet.map(work):
        if isinstance(outcome, HostError):
            unreachable[host.name] = outcome.reason
            progress.host(host.name, f"FAILED: {outcome.reason}")
        else:
            states[host.name] = outcome
            for note in outcome.notes:
                progress.host(host.name, f"warning: {note}")
    return states, unreachable


def _history_line(operation: str, before: str | None, target: str) -> str:
    record = {
        "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "op": operation,
        "from": before,
        "to": target,
        "user": _local_user(),
        "controller": socket.gethostname(),
    }
    return json.dumps(record, sort_keys=True)


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass(frozen=True)
class Switched:
    link: str
    resolved: str
    seconds: float


def _switch(connection: HostConnection, deploy_to: str, host_plan: HostPlan, mode: str) -> Switched:
    """Run the shared switch helper on one host and check its read-back against the plan."""
    target = host_plan.target or ""
    command = command_line(
        "switch",
        deploy_to,
        target,
        host_plan.expected_link,
        mode,
        host_plan.previous_version,
        _history_line(mode, host_plan.before, target),
    )
    result = connection.run(command)
    output = parse_output(result.output)
    if result.exit_status != 0:
        raise StepFailed(connection.host.name, "switch", result.exit_status, output.error_message())
    link, resolved = ((output.first("after") or []) + ["", ""])[:2]
    if link != f"releases/{target}" or posixpath.basename(resolved) != target:
        raise StepFailed(
            connection.host.name,
            "verification",
            0,
            f"current reads back as {link!r} ({resolved!r}), not {target}",
        )
    return Switched(link, resolved, result.seconds)


def _switch_phase(
    fleet: Fleet, hosts: list[HostPlan], mode: str, progress: Progress
) -> dict[str, Switched | HostError]:
    by_name = {host_plan.host: host_plan for host_plan in hosts}
    outcomes: dict[str, Switched | HostError] = {}

    def work(connection: HostConnection) -> Switched:
        return _switch(connection, fleet.inventory.deploy_to, by_name[connection.host.name], mode)

    targets = [fleet.inventory.host(name) for name in by_name]
    for host, outcome in fleet.map(work, targets):
        outcomes[host.name] = outcome
        if isinstance(outcome, HostError):
            progress.host(host.name, f"FAILED: {outcome.reason}")
        else:
            progress.host(host.name, f"current -> {outcome.link} (verified)")
    return outcomes


def _show_plan(plan: Plan, progress: Progress) -> None:
    labels = {
        planning.STAGE: "stage and switch",
        planning.SWITCH: "switch",
        planning.KEEP: "no change",
        planning.REFUSE: "REFUSED",
        planning.UNREACHABLE: "UNREACHABLE",
    }
    progress.say(f"plan: {plan.operation} -> {plan.target or '(none)'}")
    for host_plan in plan.hosts:
        label = labels[host_plan.action]
        if host_plan.action == planning.STAGE:
            label += " (cached artifact)" if host_plan.source == planning.CACHE else " (upload)"
        move = f"{host_plan.before or '-'} -> {host_plan.target or '-'}"
        reason = f": {host_plan.reason}" if host_plan.reason else ""
        progress.host(host_plan.host, f"{label} {move}{reason}")


def _untouched_result(host_plan: HostPlan, has_target: bool) -> HostResult:
    """The result of a host the operation does not change (kept, refused, unreachable or skipped)."""
    if host_plan.action == planning.UNREACHABLE:
        status = FAILED
    elif host_plan.action == planning.REFUSE:
        status = REFUSED
    elif host_plan.action == planning.KEEP and has_target:
        status = UNCHANGED
    else:
        status = SKIPPED
    message = host_plan.reason or ("not changed" if status == SKIPPED else "")
    return HostResult(host_plan.host, status, host_plan.before, host_plan.before, False, 0.0, message)


def _results_for_refused_plan(plan: Plan) -> list[HostResult]:
    return [_untouched_result(host_plan, plan.target is not None) for host_plan in plan.hosts]


def _switch_results(to_switch: list[HostPlan], switched: Mapping[str, Switched | HostError]) -> dict[str, HostResult]:
    """Per-host results of a switch phase: verified on success, the reason on failure."""
    results = {}
    for host_plan in to_switch:
        outcome = switched[host_plan.host]
        if isinstance(outcome, HostError):
            results[host_plan.host] = HostResult(
                host_plan.host, FAILED, host_plan.before, None, False, 0.0, outcome.reason
            )
        else:
            results[host_plan.host] = HostResult(
                host_plan.host, OK, host_plan.before, host_plan.target, True, outcome.seconds
            )
    return results


def _dry_run(report: OperationReport, plan: Plan) -> None:
    report.notes.append("dry run: nothing was changed")
    report.hosts = [HostResult(h.host, UNCHANGED, h.before, h.before, False, 0.0, "dry run") for h in plan.hosts]


def _resume_or_new_release_id(states: Mapping[str, HostState], digest: str) -> str:
    """Resume an interrupted deploy of the same artifact, else pick a fresh fleet-wide id."""
    current_with_digest = {
        state.current
        for state in states.values()
        if state.current is not None
        and (info := state.releases.get(state.current)) is not None
        and info.digest == digest
    }
    if len(current_with_digest) == 1:
        return next(iter(current_with_digest))
    taken = {release for state in states.values() for release in state.releases}
    return new_release_id(datetime.now(timezone.utc), digest, taken)


def run_deploy(
    fleet: Fleet,
    artifact: Artifact,
    release_id: str | None,
    states: dict[str, HostState],
    unreachable: Unreachable,
    progress: Progress,
    options: Options,
) -> OperationReport:
    """Deploy on an open fleet whose state was just gathered."""
    inventory = fleet.inventory
    release = release_id or _resume_or_new_release_id(states, artifact.digest)
    plan = planning.plan_deploy(inventory.deploy_to, states, unreachable, release, artifact.digest)
    _show_plan(plan, progress)
    report = OperationReport("deploy", release)
    if plan.refusal or options.dry_run:
        report.hosts = _results_for_refused_plan(plan)
        report.refusal = plan.refusal
        if options.dry_run and not plan.refusal:
            _dry_run(report, plan)
        return report

    results = {h.host: _untouched_result(h, True) for h in plan.with_action(planning.KEEP)}

    to_stage = plan.with_action(planning.STAGE)
    stage_failed: dict[str, HostError] = {}
    if to_stage:
        started = time.monotonic()
        progress.say(
            f"staging {release} on {len(to_stage)} host(s) ({artifact.size} bytes, sha256 {artifact.digest[:12]})"
        )
        stage_failed = _stage_phase(fleet, artifact, release, to_stage, progress)
        report.phases.append(Phase("stage", time.monotonic() - started, not stage_failed))
    if stage_failed:
        for host_plan in plan.acting():
            error = stage_failed.get(host_plan.host)
            if error is not None:
                results[host_plan.host] = HostResult(
                    host_plan.host, FAILED, host_plan.before, host_plan.before, False, 0.0, error.reason
                )
            else:
                results[host_plan.host] = HostResult(
                    host_plan.host,
                    SKIPPED,
                    host_plan.before,
                    host_plan.before,
                    False,
                    0.0,
                    "staged but not switched: another host failed",
                )
        report.hosts = list(results.values())
        report.notes.append(
            f"no host was switched; staged folders stay in {inventory.deploy_to}/releases/{release} for inspection"
        )
        return report

    started = time.monotonic()
    to_switch = plan.acting()
    progress.say(f"switching {len(to_switch)} host(s) to {release}")
    switched = _switch_phase(fleet, to_switch, "deploy", progress)
    report.phases.append(
        Phase("switch", time.monotonic() - started, all(not isinstance(o, HostError) for o in switched.values()))
    )
    results.update(_switch_results(to_switch, switched))
    report.hosts = list(results.values())
    if not report.ok:
        report.notes.append("the fleet may be split between releases: run `inv status`, then deploy again or roll back")
    return report


def _stage_phase(
    fleet: Fleet, artifact: Artifact, release: str, hosts: list[HostPlan], progress: Progress
) -> dict[str, HostError]:
    inventory = fleet.inventory
    sources = {host_plan.host: host_plan.source for host_plan in hosts}
    mapped = MappedArtifact(artifact.path)
    failures: dict[str, HostError] = {}

    def work(connection: HostConnection) -> float:
        source = sources[connection.host.name]
        command = command_line("stage", inventory.deploy_to, release, artifact.digest, source, inventory.validate)
        upload = mapped.view if source == planning.UPLOAD else None
        result = connection.run(command, timeout=inventory.timeouts.stage, upload=upload)
        output = parse_output(result.output)
        if result.exit_status != 0:
            step = "validation" if result.exit_status == EXIT_VALIDATE else "staging"
            message = output.error_message()
            if result.exit_status == EXIT_VALIDATE:
                code = (output.first("validate_failed") or ["?"])[0]
                tail = " | ".join(line.strip() for line in output.text[-3:] if line.strip())
                message = f"`{inventory.validate}` exited {code}" + (f": {tail}" if tail else "")
            raise StepFailed(connection.host.name, step, result.exit_status, message, output.tail())
        if output.first("staged") != [release, artifact.digest]:
            raise StepFailed(connection.host.name, "staging", 0, "the host did not confirm the staged release")
        return result.seconds

    try:
        targets = [inventory.host(name) for name in sources]
        for host, outcome in fleet.map(work, targets):
            if isinstance(outcome, HostError):
                failures[host.name] = outcome
                progress.host(host.name, f"FAILED: {outcome.reason}")
            else:
                progress.host(host.name, f"staged and validated ({outcome:.2f}s)")
    finally:
        mapped.close()
    return failures


def run_rollback(
    fleet: Fleet,
    to: str | None,
    states: dict[str, HostState],
    unreachable: Unreachable,
    progress: Progress,
    options: Options,
) -> OperationReport:
    """Roll back on an open fleet whose state was just gathered."""
    inventory = fleet.inventory
    plan = planning.plan_rollback(inventory.deploy_to, states, unreachable, to)
    _show_plan(plan, progress)
    report = OperationReport("rollback", plan.target)
    if plan.refusal:
        report.refusal = plan.refusal
        report.hosts = _results_for_refused_plan(plan)
        return report
    if options.dry_run:
        _dry_run(report, plan)
        return report

    results = {h.host: _untouched_result(h, True) for h in plan.hosts if not h.changes}
    to_switch = plan.with_action(planning.SWITCH)
    if to_switch:
        started = time.monotonic()
        progress.say(f"switching {len(to_switch)} host(s) back to {plan.target}")
        switched = _switch_phase(fleet, to_switch, "rollback", progress)
        report.phases.append(
            Phase(
                "switch",
                time.monotonic() - started,
                all(not isinstance(o, HostError) for o in switched.values()),
            )
        )
        results.update(_switch_results(to_switch, switched))
    report.hosts = list(results.values())
    if any(result.status == FAILED for result in report.hosts):
        report.notes.append("run `inv rollback` again once the failed hosts are back: it completes this rollback")
    return report


def _timed_gather(fleet: Fleet, operation: str, progress: Progress) -> tuple[dict[str, HostState], Unreachable, Phase]:
    started = time.monotonic()
    progress.say(f"{operation}: reading state of {len(fleet.inventory.hosts)} host(s)")
    states, unreachable = gather(fleet, progress)
    return states, unreachable, Phase("gather", time.monotonic() - started, not unreachable)


def deploy(
    inventory: Inventory,
    artifact_source: str,
    release_id: str | None = None,
    options: Options | None = None,
    progress: Progress | None = None,
) -> OperationReport:
    options = options or Options()
    progress = progress or Progress()
    if release_id is not None:
        check_release_id(release_id)
    with PreparedArtifact(artifact_source) as artifact, _open_fleet(inventory, options) as fleet:
        states, unreachable, gathered = _timed_gather(fleet, "deploy", progress)
        report = run_deploy(fleet, artifact, release_id, states, unreachable, progress, options)
        report.phases.insert(0, gathered)
        return report


def rollback(
    inventory: Inventory,
    to: str | None = None,
    options: Options | None = None,
    progress: Progress | None = None,
) -> OperationReport:
    options = options or Options()
    progress = progress or Progress()
    if to is not None:
        check_release_id(to)
    with _open_fleet(inventory, options) as fleet:
        states, unreachable, gathered = _timed_gather(fleet, "rollback", progress)
        report = run_rollback(fleet, to, states, unreachable, progress, options)
        report.phases.insert(0, gathered)
        return report


def _verify_phase(
    fleet: Fleet, expected: Mapping[str, str | None], progress: Progress
) -> tuple[dict[str, HostState], Unreachable, dict[str, str]]:
    """Read every host's state again and compare `current` with what is expected per host."""
    states, unreachable = gather(fleet, progress)
    problems: dict[str, str] = dict(unreachable)
    for name, state in states.items():
        want = expected.get(name)
        if state.current != want:
            problems[name] = f"current is {state.current or state.current_problem or 'missing'}, expected {want}"
    return states, unreachable, problems


def drill(
    inventory: Inventory,
    artifact_source: str,
    options: Options | None = None,
    progress: Progress | None = None,
) -> OperationReport:
    """Deploy, verify; roll back, verify each host is on its baseline; deploy again, verify."""
    options = options or Options()
    progress = progress or Progress()
    report = OperationReport("rollback-drill", None)
    with PreparedArtifact(artifact_source) as artifact, _open_fleet(inventory, options) as fleet:

        def timed_phase(name: str, detail: str, ok: bool, started: float) -> None:
            seconds = time.monotonic() - started
            report.phases.append(Phase(name, seconds, ok, detail))
            progress.say(f"drill phase {name}: {'PASS' if ok else 'FAIL'} in {seconds:.2f}s {detail}".rstrip())

        started = time.monotonic()
        progress.say(f"drill: reading baseline of {len(inventory.hosts)} host(s)")
        states, unreachable = gather(fleet, progress)
        without_release = sorted(name for name, state in states.items() if state.current is None)
        if unreachable:
            timed_phase("baseline", f"unreachable: {', '.join(sorted(unreachable))}", False, started)
            report.hosts = [HostResult(n, FAILED, None, None, False, 0.0, r) for n, r in sorted(unreachable.items())]
            return report
        if without_release:
            timed_phase("baseline", "", False, started)
            raise PlanRefused(
                f"the drill needs a baseline release on every host, and {', '.join(without_release)} "
                "have none: run `inv deploy` once with the current version first"
            )
        baseline = {name: state.current for name, state in states.items()}
        if len(set(baseline.values())) != 1:
            timed_phase("baseline", "", False, started)
            split = ", ".join(f"{name}={release}" for name, release in sorted(baseline.items()))
            raise PlanRefused(f"the drill needs the whole fleet on one release; hosts differ: {split}")
        timed_phase("baseline", f"fleet on {next(iter(baseline.values()))}", True, started)

        def deploy_and_verify(phase: str, states: dict[str, HostState]) -> tuple[OperationReport, dict[str, HostState]]:
            started = time.monotonic()
            result = run_deploy(fleet, artifact, None, states, {}, progress, options)
            report.target = result.target
            fresh, _unreachable, problems = _verify_phase(fleet, {n: result.target for n in baseline}, progress)
            ok = result.ok and not problems
            timed_phase(phase, f"release {result.target}" + _problem_text(problems), ok, started)
            return _merge(result, problems), fresh

        first, states = deploy_and_verify("deploy", states)
        if not first.ok:
            report.hosts = first.hosts
            return report

        started = time.monotonic()
        back = run_rollback(fleet, None, states, {}, progress, options)
        states, _unreachable, problems = _verify_phase(fleet, baseline, progress)
        ok = back.ok and not problems
        timed_phase("rollback", f"back to {back.target}" + _problem_text(problems), ok, started)
        if not ok:
            report.hosts = _merge(back, problems).hosts
            return report

        again, states = deploy_and_verify("redeploy", states)
        report.hosts = again.hosts
        return report


def _problem_text(problems: Mapping[str, str]) -> str:
    return "".join(f"; {name}: {problem}" for name, problem in sorted(problems.items()))


def _merge(result: OperationReport, problems: Mapping[str, str]) -> OperationReport:
    """Mark hosts whose independent read-back disagreed with the operation's own result."""
    for host_result in result.hosts:
        problem = problems.get(host_result.host)
        if problem:
            host_result.status = FAILED
            host_result.verified = False
            host_result.message = problem
    return result


@dataclass(frozen=True)
class StatusReport:
    inventory: Inventory
    states: dict[str, HostState]
    unreachable: Unreachable

    @property
    def exit_code(self) -> int:
        return 1 if self.unreachable or any(s.current_problem for s in self.states.values()) else 0

    def to_dict(self) -> dict[str, Any]:
        deploy_to = self.inventory.deploy_to
        hosts: list[dict[str, Any]] = []
        for host in self.inventory.hosts:
            if host.name in self.unreachable:
                hosts.append({"host": host.name, "reachable": False, "error": self.unreachable[host.name]})
                continue
            state = self.states[host.name]
            previous, previous_problem = state.previous_version(deploy_to)
            hosts.append(
                {
                    "host": host.name,
                    "reachable": True,
                    "hostname": state.hostname,
                    "current": state.current,
                    "current_link": state.current_link or None,
                    "previous_version": previous,
                    "problems": [p for p in (state.current_problem, previous_problem) if p] + list(state.notes),
                    "releases": [
                        {"id": info.release_id, "status": info.status, "digest": info.digest or None}
                        for info in sorted(state.releases.values(), key=lambda i: i.release_id)
                    ],
                    "free_kb": state.free_kb,
                }
            )
        currents = sorted({s.current or "-" for s in self.states.values()})
        return {
            "deploy_to": deploy_to,
            "hosts": hosts,
            "consistent": len(currents) == 1 and not self.unreachable,
            "currents": currents,
        }


def status(inventory: Inventory, options: Options | None = None, progress: Progress | None = None) -> StatusReport:
    options = options or Options()
    progress = progress or Progress(quiet=True)
    with _open_fleet(inventory, options) as fleet:
        states, unreachable = gather(fleet, progress)
    return StatusReport(inventory, states, unreachable)
