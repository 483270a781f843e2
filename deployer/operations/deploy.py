"""The deploy workflow: stage everywhere, migrate once, switch batch by batch; a failing batch is
reverted (the revert plan comes from `deployer.plan`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime, timezone

from deployer import host_signers
from deployer import plan as planning
from deployer.errors import HostError
from deployer.inventory import Inventory
from deployer.inventory.model import Watch
from deployer.invocation import command
from deployer.operations.outcome import (
    hook_env,
    in_inventory_order,
    local_hook,
    plan_data,
    refused_or_dry_run,
    show_plan,
    switch_result,
    untouched_result,
)
from deployer.operations.session import Options, Unreachable, finished, locked_run, prepared_artifact
from deployer.phases import (
    Run,
    Switched,
    SwitchRequest,
    finish,
    mark_info,
    migrate_once,
    stage,
    switch,
)
from deployer.phases.watch import CUT, check_queries
from deployer.phases.watch import watch as watch_phase
from deployer.plan import HostPlan
from deployer.plan.watch import FAILED as FAILED_WATCH
from deployer.plan.watch import PASSED, UNDECIDED
from deployer.release import Artifact, check_release_id
from deployer.report import (
    FAILED,
    OK,
    REVERTED,
    SKIPPED,
    HostResult,
    OperationReport,
    Phase,
    Progress,
)
from deployer.state import HostState


def run_deploy(
    run: Run,
    artifact: Artifact,
    release_id: str | None,
    states: dict[str, HostState],
    unreachable: Unreachable,
    options: Options,
    final: bool = True,
) -> OperationReport:
    """Deploy on a locked fleet whose state was just read.

    Stage everywhere; run `migrate` once; switch batch by batch (each host: before_switch, switch,
    verify, after_switch, health check). A failing batch puts every switched host back on its
    previous release (verified). `final` runs end the operation: the lock is released and old
    releases are pruned; the drill's earlier phases keep both.
    """
    inventory = run.inventory
    signed_only = inventory.requires_signatures
    # a controller whose clock is behind the fleet's still records the release after every other
    now, clock_warning = planning.fleet_clock(states, datetime.now(timezone.utc))
    release = release_id or planning.choose_release_id(states, artifact.digest, now, signed_only)
    copies = host_signers.host_copies(inventory, states)
    plan = planning.plan_deploy(
        inventory.deploy_to,
        states,
        unreachable,
        release,
        artifact.digest,
        force=options.force,
        unpin=options.unpin,
        manifest=artifact.manifest,
        keep_releases=inventory.keep_releases,
        keep_failed_releases=inventory.keep_failed_releases,
        signers={name: copy.digests for name, copy in copies.items()},
        pull=bool(artifact.url),
    )
    if artifact.revision.version or artifact.revision.commit:
        run.revisions[release] = artifact.revision
    show_plan(plan, run.progress)
    report = OperationReport("deploy", release, plan=plan_data(plan), revision=artifact.revision.as_dict())
    if clock_warning:
        run.progress.say(f"warning: {clock_warning}")
        report.warnings.append(clock_warning)
    if artifact.signer is not None:
        report.signature = artifact.signer.as_dict()
        report.notes.append(f"signed by {artifact.signer.principal} ({artifact.signer.fingerprint})")
    if inventory.watch is not None and plan.acting() and not options.no_watch:
        # a malformed query is refused here, before anything is staged
        report.warnings += check_queries(inventory.watch, run.progress, inventory.path)
    if refused_or_dry_run(report, plan, options.dry_run):
        return report
    rollout = _Rollout(run, plan, report, release, final, None if options.no_watch else inventory.watch)
    rollout.staged_at = now
    if not rollout.stage(artifact, copies) or not rollout.migrate():
        return report
    attempted, failure = rollout.switch_in_batches(options.unpin)
    if failure:
        rollout.revert(attempted, failure)
        if final:
            finish(run, sorted(run.lock.held))  # only our lock: marks were written by the sessions that switched
    elif final and (report.cut_short or report.problems):  # a watch held or cut short: no verdict, nothing pruned
        finish(run, sorted(run.lock.held))
    elif final:
        finish(run, sorted(run.lock.held), prune=plan.prune, unpin="1" if options.unpin else "")
    report.hosts = list(rollout.results.values())
    if report.ok:
        local_hook(report, inventory, "after_deploy_local", hook_env("deploy", release, states), run.progress)
    return report


class _Rollout:
    """One deploy's phases after its plan: stage, migrate, switch in batches, revert on failure."""

    def __init__(
        self, run: Run, plan: planning.Plan, report: OperationReport, release: str, final: bool, watch: Watch | None
    ) -> None:
        self.run = run
        self.watch = watch
        self.staged_at: datetime | None = None  # when the release is recorded as staged (plan.fleet_clock)
        self.plan = plan
        self.report = report
        self.release = release
        self.final = final
        self.results = {h.host: untouched_result(h, True) for h in plan.with_action(planning.KEEP)}
        self.acting = {h.host: h for h in plan.acting()}

    def stop_before_switching(self, reason: str, failed: Mapping[str, HostError] | None = None) -> None:
        for name, host_plan in self.acting.items():
            error = (failed or {}).get(name)
            status, message = (FAILED, error.reason) if error is not None else (SKIPPED, reason)
            self.results[name] = HostResult(name, status, host_plan.before, host_plan.before, False, 0.0, message)
        self.report.hosts = list(self.results.values())
        inventory = self.run.inventory
        folders = sorted({inventory.deploy_to_of(inventory.host(name)) for name in self.acting})
        where = folders[0] if len(folders) == 1 else "{" + ",".join(folders) + "}"
        self.report.notes.append(
            f"no host was switched; staged folders stay in {where}/releases/{self.release} for inspection"
        )

    def stage(self, artifact: Artifact, copies: Mapping[str, host_signers.HostCopy]) -> bool:
        to_stage = self.plan.with_action(planning.STAGE)
        if not to_stage:
            return True
        started = time.monotonic()
        self.run.progress.say(
            f"staging {self.release} on {len(to_stage)} host(s) ({artifact.size} bytes, sha256 {artifact.digest[:12]})"
        )
        failed = stage(self.run, artifact, self.release, to_stage, copies, self.staged_at)
        self.report.phases.append(Phase("stage", time.monotonic() - started, not failed))
        if failed:
            self.stop_before_switching("staged but not switched: another host failed", failed)
        return not failed

    def migrate(self) -> bool:
        plan, inventory = self.plan, self.run.inventory
        if plan.migration != "migrate" or not inventory.migrate or not self.acting:
            return True
        hosts = list(self.acting)
        if migrate_once(self.run, self.report, "migrate", self.release, hosts, plan.migration_from, plan.migration_to):
            return True
        self.stop_before_switching("not switched: the migration failed")
        return False

    def switch_in_batches(self, unpin: bool) -> tuple[list[str], str]:
        """Switch batch by batch in inventory order; (hosts attempted, why the rollout stopped or "")."""
        inventory, progress = self.run.inventory, self.run.progress
        order = in_inventory_order(inventory, list(self.acting))
        groups = planning.batches(order, inventory.rollout.batch_size(len(order)))
        attempted: list[str] = []
        for index, group in enumerate(groups):
            last = index == len(groups) - 1
            request = SwitchRequest(
                mode="deploy",
                operation="deploy",
                # a watched deploy keeps every lock and prunes nothing until its last watch passed
                unlock=self.final and last and self.watch is None,
                schema=self.plan.schema,
                unpin=unpin,
                prune=self.plan.prune if self.final and last and self.watch is None else {},
                # the last batch's verdict is the deploy's: its hosts keep the lock and prune nothing
                # until every one of them passed (a revert may follow)
                verdict=self.final and last and len(group) > 1 and self.watch is None,
                bad_on_failure=mark_info("deploy failed: its checks failed on this host after the switch"),
            )
            label = f"batch {index + 1}/{len(groups)}: " if len(groups) > 1 else ""
            progress.say(f"{label}switching {len(group)} host(s) to {self.release}")
            progress.batch(index + 1, len(groups), list(group))
            started = time.monotonic()
            outcomes = switch(self.run, [self.acting[name] for name in group], request)
            attempted += group
            for name in group:
                self.results[name] = switch_result(self.acting[name], outcomes[name])
            failed = [name for name in group if self.results[name].status != OK]
            phase_name = f"switch batch {index + 1}" if len(groups) > 1 else "switch"
            self.report.phases.append(Phase(phase_name, time.monotonic() - started, not failed))
            if failed:
                self.skip([name for later in groups[index + 1 :] for name in later], f"batch {index + 1} failed")
                return attempted, ", ".join(f"{name}: {self.results[name].message}" for name in failed)
            if self.watch is not None:
                label = "the fleet" if last else f"batch {index + 1}/{len(groups)}"
                failure = self.watched(self.watch, label, attempted)
                if failure or self.report.cut_short or self.report.problems:
                    self.skip([name for later in groups[index + 1 :] for name in later], f"the watch of {label} ended")
                    return attempted, failure
            if not last and inventory.rollout.pause:
                progress.say(f"batch {index + 1} healthy; pausing {inventory.rollout.pause:g}s")
                time.sleep(inventory.rollout.pause)
        return attempted, ""

    def skip(self, names: list[str], why: str) -> None:
        for name in names:
            before = self.acting[name].before
            self.results[name] = HostResult(name, SKIPPED, before, before, False, 0.0, f"not switched: {why}")

    def watched(self, watch: Watch, label: str, switched: list[str]) -> str:
        """Watch the hosts switched so far; why the rollout must be reverted ("" if not: passed, or
        held or cut short, said in the report)."""
        started = time.monotonic()
        outcome = watch_phase(watch, label, self.release, switched, self.run.progress, self.report, self.run)
        self.report.phases.append(Phase(f"watch {label}", time.monotonic() - started, outcome.verdict == PASSED))
        if outcome.verdict == PASSED:
            return ""
        if outcome.verdict == FAILED_WATCH or (outcome.verdict == UNDECIDED and watch.on_error == "rollback"):
            failure = outcome.reason + ("; on_error: rollback" if outcome.verdict == UNDECIDED else "")
            self.report.problems.append(failure)
            return failure
        back = f"`{command('rollback')}` puts them back on their previous release"
        where = f"{len(switched)} host(s) stay on {self.release} (switched, verified)"
        if outcome.verdict == CUT:
            self.report.cut_short = f"{outcome.reason}; nothing was rolled back: {where}; {back}"
        else:
            self.report.problems.append(f"{outcome.reason}; on_error: hold: nothing was rolled back: {where}; {back}")
        return ""

    def revert(self, attempted: list[str], failure: str) -> None:
        """Put every host this rollout touched back on the release it had (the planner's revert plan)."""
        back, stuck = planning.plan_revert([self.acting[name] for name in attempted], self.release)
        for name in stuck:
            self.results[name].message += "; no earlier release here to go back to"
            self.results[name].status = FAILED
        if not back:
            return
        self.run.progress.say(f"rollout failed ({failure}); reverting {len(back)} host(s) to their previous release")
        self.run.progress.timeline.mark("revert", failure, [host_plan.host for host_plan in back])
        started = time.monotonic()
        request = SwitchRequest(
            mode="revert",
            operation="revert",
            unlock=self.final,
            mark_bad=self.release,
            bad_info=mark_info(f"deploy failed: {failure}"),
        )
        outcomes = switch(self.run, back, request)
        for host_plan in back:
            _reverted(self.results[host_plan.host], host_plan, outcomes[host_plan.host])
        all_back = all(not isinstance(outcomes[h.host], HostError) for h in back)
        self.report.phases.append(Phase("revert", time.monotonic() - started, all_back))
        self.report.reverted_to_start = all_back
        if self.final and any(not isinstance(outcomes[h.host], HostError) for h in back):
            env = {
                "DEPLOYER_OPERATION": "revert",
                "DEPLOYER_RELEASE": ",".join(sorted({h.target or "" for h in back})),
                "DEPLOYER_PREVIOUS": self.release,
                "DEPLOYER_HOSTS": ",".join(sorted(h.host for h in back)),
            }
            local_hook(self.report, self.run.inventory, "after_rollback_local", env, self.run.progress)


def _reverted(result: HostResult, host_plan: HostPlan, outcome: Switched | HostError) -> None:
    """A host's result after its revert: back on its release (verified), or the revert's failure."""
    if isinstance(outcome, HostError):
        prefix = result.message + "; " if result.status != OK else ""
        result.status = FAILED
        result.after = None
        result.verified = False
        result.message = prefix + f"REVERT FAILED: {outcome.reason}"
        return
    result.after = host_plan.target
    result.verified = True
    extra = f"; after revert: {outcome.failing}" if outcome.failing else ""
    if result.status == OK:
        result.status = REVERTED
        result.message = f"reverted to {host_plan.target} (verified){extra}"
    else:
        result.message += f"; reverted to {host_plan.target} (verified){extra}"


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
    with (
        prepared_artifact(inventory, artifact_source, options) as artifact,
        locked_run(inventory, "deploy", options, progress) as (
            run,
            states,
            unreachable,
            gathered,
        ),
    ):
        report = run_deploy(run, artifact, release_id, states, unreachable, options)
        report.phases.insert(0, gathered)
    return finished(report, run)
