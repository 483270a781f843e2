"""The rollback drill: deploy, roll back, deploy again, each verified; a failed phase restores the
starting point. Its releases and preconditions come from `plan.plan_drill`."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from deployer import plan as planning
from deployer.errors import PlanRefused
from deployer.inventory import Inventory
from deployer.lock import read_states
from deployer.operations.deploy import run_deploy
from deployer.operations.outcome import switch_result
from deployer.operations.rollback import run_rollback
from deployer.operations.session import Options, Unreachable, finished, locked_run, prepared_artifact
from deployer.phases import (
    Run,
    SwitchRequest,
    finish,
    switch,
)
from deployer.plan import HostPlan
from deployer.release import Artifact
from deployer.report import (
    FAILED,
    OK,
    UNCHANGED,
    HostResult,
    OperationReport,
    Phase,
    Progress,
)
from deployer.state import HostState


def verify_phase(
    run: Run, expected: Mapping[str, str | None]
) -> tuple[dict[str, HostState], Unreachable, dict[str, str]]:
    """Read every host's state again and compare `current` with what is expected per host."""
    states, unreachable = read_states(run.fleet, run.progress)
    problems: dict[str, str] = dict(unreachable)
    for name, state in states.items():
        want = expected.get(name)
        if state.current != want:
            problems[name] = f"current is {state.current or state.current_problem or 'missing'}, expected {want}"
    return states, unreachable, problems


Check = Callable[[str], tuple[bool, str]]


class _Drill:
    """One rollback drill's phases over a locked fleet (the plan, `planning.plan_drill`, decided them)."""

    def __init__(self, run: Run, artifact: Artifact, options: Options, check: Check | None) -> None:
        self.run = run
        self.artifact = artifact
        self.options = options
        self.check = check
        self.report = OperationReport("rollback-drill", None)
        if artifact.signer is not None:
            self.report.signature = artifact.signer.as_dict()
            self.report.notes.append(f"signed by {artifact.signer.principal} ({artifact.signer.fingerprint})")

    def phase(self, name: str, detail: str, ok: bool, started: float, hosts: list[HostResult], expected: str) -> bool:
        """Record a phase (after the independent testinfra checks, when it passed so far); True if it passed."""
        if ok and self.check is not None and expected:
            with self.run.progress.timeline.span([host.name for host in self.run.inventory.hosts], "checks") as outcome:
                passed, checked = self.check(expected)  # the independent testinfra suite, over OpenSSH
                outcome.ok = passed
            if not passed:
                ok, detail = False, f"{detail}; testinfra checks failed: {checked}"
        seconds = time.monotonic() - started
        self.report.phases.append(Phase(name, seconds, ok, detail, list(hosts)))
        self.run.progress.say(f"drill phase {name}: {'PASS' if ok else 'FAIL'} in {seconds:.2f}s {detail}".rstrip())
        return ok

    def deploy(self, name: str, release: str, states: dict[str, HostState]) -> tuple[bool, dict[str, HostState]]:
        started = time.monotonic()
        self.run.drill_phase = name
        self.run.progress.section(self.run.drill_phase)
        result = run_deploy(self.run, self.artifact, release, states, {}, self.options, final=False)
        self.report.warnings.extend(result.warnings)
        self.report.watches.extend(result.watches)  # the inventory's watch runs after each deploy phase
        self.report.cut_short = self.report.cut_short or result.cut_short
        fresh, _unreachable, problems = verify_phase(self.run, {n: release for n in states})
        if result.refusal:
            return self.phase(name, f"refused: {result.refusal}", False, started, [], ""), fresh
        detail = f"release {release}" + _problem_text(problems, result.hosts)
        merged = _merge(result, problems)
        if result.problems or result.cut_short:
            detail += "; " + "; ".join([*result.problems, result.cut_short]).strip("; ")
        return self.phase(name, detail, result.ok and not problems, started, merged.hosts, release), fresh

    def rollback(self, target: str, states: dict[str, HostState]) -> tuple[bool, dict[str, HostState]]:
        started = time.monotonic()
        self.run.drill_phase = "rollback"
        self.run.progress.section(self.run.drill_phase)
        back = run_rollback(self.run, target, states, {}, self.options, final=False, mark_bad=False, pin=False)
        fresh, _unreachable, problems = verify_phase(self.run, {n: target for n in states})
        if back.refusal:
            return self.phase("rollback", f"refused: {back.refusal}", False, started, [], ""), fresh
        detail = f"back to {target}" + _problem_text(problems, back.hosts)
        back = _merge(back, problems)
        return self.phase("rollback", detail, back.ok and not problems, started, back.hosts, target), fresh

    def restore(self, baseline: str, states: dict[str, HostState]) -> dict[str, HostState]:
        """Put every host that is not on the drill's starting release back on it (verified): a failed
        drill never leaves the fleet worse than it found it."""
        away = [
            HostPlan(name, planning.SWITCH, state.current, baseline, expected_link=state.current_link)
            for name, state in sorted(states.items())
            if state.current != baseline
        ]
        if not away:
            return states
        started = time.monotonic()
        self.run.drill_phase = "restore"
        self.run.progress.section(self.run.drill_phase)
        self.run.progress.say(f"drill failed: putting {len(away)} host(s) back on {baseline}")
        outcomes = switch(self.run, away, SwitchRequest(mode="revert", operation="revert"))
        results = [switch_result(host_plan, outcomes[host_plan.host]) for host_plan in away]
        fresh, _unreachable, problems = verify_phase(self.run, {n: baseline for n in states})
        detail = f"back on {baseline}" + _problem_text(problems, results)
        seconds = time.monotonic() - started
        self.report.phases.append(Phase("restore", seconds, not problems, detail, results))
        self.run.progress.say(f"drill restore: {'done' if not problems else 'INCOMPLETE'} {detail}")
        return fresh

    def where(self, states: dict[str, HostState], baseline: str | None) -> list[HostResult]:
        """Where each host ends (read back): the drill's final per-host result; its time is the host's
        time across the drill's phases."""
        return [
            HostResult(
                name,
                OK if state.current in (baseline, self.report.target) and state.current else FAILED,
                baseline,
                state.current,
                True,
                sum(result.seconds for phase in self.report.phases for result in phase.hosts if result.host == name),
                f"on {state.current or state.current_problem or 'no release'}",
            )
            for name, state in sorted(states.items())
        ]


def drill(
    inventory: Inventory,
    artifact_source: str,
    options: Options | None = None,
    progress: Progress | None = None,
    check: Check | None = None,
) -> OperationReport:
    """Deploy, verify; roll back to the starting release, verify; deploy again, verify.

    The whole drill holds the fleet lock, pins nothing and marks nothing bad by itself. Its
    releases are decided up front by the planner (`planning.plan_drill`); when the artifact is
    already live the drill is live -> previous -> live. A failed phase puts every host back on
    the release the drill found before it returns, and the report says where each host is.
    """
    options = options or Options()
    progress = progress or Progress()
    with (
        prepared_artifact(inventory, artifact_source, options) as artifact,
        locked_run(inventory, "rollback-drill", options, progress) as (run, states, unreachable, _gathered),
    ):
        started = time.monotonic()
        signed_only = inventory.requires_signatures
        now = datetime.now(timezone.utc)
        plan = planning.plan_drill(inventory.deploy_to, states, unreachable, artifact.digest, now, signed_only)
        drilled = _Drill(run, artifact, options, check)
        report = drilled.report
        if plan.refusal:
            drilled.phase("baseline", plan.refusal, False, started, [], "")
            if unreachable:
                report.hosts = [
                    HostResult(n, FAILED, None, None, False, 0.0, r) for n, r in sorted(unreachable.items())
                ]
                return finished(report, run)
            raise PlanRefused(plan.refusal)
        baseline = plan.baseline
        assert baseline is not None
        report.target = plan.release_id
        shape = f"live {baseline} -> {plan.rollback_to} -> {baseline}" if plan.live else f"fleet on {baseline}"
        drilled.phase(
            "baseline",
            shape,
            True,
            started,
            [HostResult(n, UNCHANGED, baseline, baseline, True) for n in sorted(states)],
            "",
        )
        ok, states = drilled.deploy("deploy", plan.release_id, states)
        if ok:
            ok, states = drilled.rollback(plan.rollback_to, states)
        if ok:
            ok, states = drilled.deploy("redeploy", plan.release_id, states)
        if not ok:
            states = drilled.restore(baseline, states)
        run.drill_phase = ""
        prune = planning.plan_prune(
            inventory.deploy_to, states, inventory.keep_releases, inventory.keep_failed_releases
        )
        finish(run, sorted(run.lock.held), prune=prune if ok else {})
        report.hosts = drilled.where(states, baseline)
        drilled_with = artifact.revision if artifact.revision.label() else run.revision_of(plan.release_id)
        report.revision = drilled_with.as_dict()
    return finished(report, run)


def _with(options: Options, **changes: Any) -> Options:
    return Options(**{**options.__dict__, **changes})


def _problem_text(problems: Mapping[str, str], hosts: Sequence[HostResult]) -> str:
    """Why a phase failed: first what each failed host said (a staging failure leaves every host
    where it was, so the read-back alone would only list `current is X, expected Y`), then the
    read-back's disagreements."""
    said = [f"; {r.host}: {r.message}" for r in hosts if r.status == FAILED and r.message]
    return "".join(said) + "".join(f"; {name}: {problem}" for name, problem in sorted(problems.items()))


def _merge(result: OperationReport, problems: Mapping[str, str]) -> OperationReport:
    """Mark hosts whose independent read-back disagreed with the operation's own result."""
    for host_result in result.hosts:
        problem = problems.get(host_result.host)
        if problem:
            host_result.status = FAILED
            host_result.verified = False
            host_result.message = problem
    return result


# --- reading and tidying fleet state ---
