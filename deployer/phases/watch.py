"""The watch after a switch: the inventory's checks read every `interval` for `duration` from
this machine, judged by `plan.watch.Tally`; every sample goes into the report. Ctrl-C ends it with
no verdict (nothing is rolled back for it). The operation decides what a verdict leads to."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from deployer.connection import HostConnection
from deployer.errors import HostError
from deployer.inventory.model import Watch, WatchCheck
from deployer.lock import utc_now
from deployer.phases.run import Run, whole_seconds
from deployer.plan.watch import ERROR, FAIL, INCONCLUSIVE, PASS, Judged, Sample, Tally, judge_host_commands
from deployer.providers import BadQuery, check_query, read_check
from deployer.report import OperationReport, Progress
from deployer.scripts import ScriptResult, run_script

CUT = "cut short"  # Ctrl-C during the watch: no verdict
SHOWN_OUTCOME = {PASS: "ok", FAIL: "FAILING", INCONCLUSIVE: "inconclusive", ERROR: "UNREADABLE"}


@dataclass(frozen=True)
class WatchOutcome:
    """How a watch ended: PASSED, FAILED, UNDECIDED (`plan.watch`) or CUT, and why in words."""

    verdict: str
    reason: str
    seconds: float


def check_queries(watch: Watch, progress: Progress, inventory: str) -> list[str]:
    """Ask every Prometheus query once before anything switches: a malformed one raises BadQuery
    naming the inventory's key (the operation is refused); a provider that cannot be read now is
    a warning (the watch's error policy decides about it later)."""
    warnings = []
    for index, check in enumerate(watch.checks):
        try:
            problem = check_query(check)
        except BadQuery as refused:
            raise BadQuery(f"{inventory}: watch.checks[{index}].query: {refused}") from None
        if problem:
            warnings.append(f"watch check {check.name!r} cannot be read now ({problem}); its on_error policy applies")
    for warning in warnings:
        progress.say(f"warning: {warning}")
    return warnings


def watch(
    watch: Watch,
    label: str,
    release: str,
    hosts: list[str],
    progress: Progress,
    report: OperationReport,
    run: Run | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> WatchOutcome:
    """Watch `hosts` (on `release`) for the watch's duration, or until a verdict comes first."""
    environment = {"DEPLOYER_RELEASE": release, "DEPLOYER_HOSTS": " ".join(hosts), "DEPLOYER_WATCH": label}
    tally = Tally(watch)
    started = time.monotonic()
    names = ", ".join(check.name for check in watch.checks)
    progress.say(f"watching {label} on {release} for {watch.duration:g}s (every {watch.interval:g}s): {names}")
    progress.timeline.mark("watch", label, hosts)
    verdict, reason = "", ""
    try:
        rounds = 0
        while not verdict:
            for check in watch.checks:
                if check.kind == "host_command":
                    judged = _on_each_host(run, check, release, hosts)
                else:
                    judged = read_check(check, environment)
                at = round(time.monotonic() - started, 3)
                if tally.add(Sample(check.name, at, judged.outcome, judged.value, judged.text)):
                    break
            elapsed = time.monotonic() - started
            progress.watching(_status_line(tally, label, max(0.0, watch.duration - elapsed)))
            if tally.verdict or elapsed >= watch.duration:
                verdict, reason = tally.end(), tally.reason
                break
            rounds += 1
            sleep(max(0.0, started + min(rounds * watch.interval, watch.duration) - time.monotonic()))
    except KeyboardInterrupt:
        progress.interrupted()
        verdict, reason = CUT, f"the watch of {label} was cut short by Ctrl-C after {time.monotonic() - started:.0f}s"
    seconds = time.monotonic() - started
    progress.timeline.mark("watch-end", f"{label}: {verdict}", hosts)
    progress.say(f"watch of {label}: {verdict.upper()}: {reason}")
    report.watches.append(
        {
            "label": label,
            "release": release,
            "hosts": hosts,
            "duration": watch.duration,
            "interval": watch.interval,
            "checks": [
                {
                    "name": check.name,
                    "kind": check.kind,
                    "fails_if": check.threshold_text(),
                    "threshold": check.fail_if.threshold if check.fail_if is not None else None,
                }
                for check in watch.checks
            ],
            "samples": [sample.as_dict() for sample in tally.samples],
            "verdict": verdict,
            "reason": reason,
            "seconds": round(seconds, 3),
        }
    )
    return WatchOutcome(verdict, reason, seconds)


def _on_each_host(run: Run | None, check: WatchCheck, release: str, hosts: list[str]) -> Judged:
    """A `host_command` check: the command in releases/RELEASE on every watched host at once, over
    the operation's connections, under its lock (fenced), kept out of the history."""
    if run is None:
        return Judged(ERROR, None, "no connection to the hosts")
    inventory = run.inventory
    options = {
        "release": release,
        "name": "watch",
        "command": check.target,
        "timeout": whole_seconds(check.timeout),
        "run": run.run_id,
        "fence": run.lock.token,
        "env": "1" if run.environment else "",
        "now": utc_now(),
        "record": "no",
    }

    def work(connection: HostConnection) -> ScriptResult:
        deploy_to = inventory.deploy_to_of(connection.host)
        limit = check.timeout + 10
        return run_script(
            connection,
            "run",
            deploy_to,
            session_timeout=limit,
            upload=[run.environment],
            gate=None,
            **options,
        )

    results: dict[str, tuple[int, str] | str] = {}
    for host, outcome in run.fleet.map(work, [inventory.host(name) for name in hosts]):
        if isinstance(outcome, HostError):
            results[host.name] = outcome.reason
            continue
        ran = outcome.output.first("ran") or []
        if len(ran) < 2 or not ran[1].isdigit():
            results[host.name] = outcome.output.error_message()
            continue
        results[host.name] = (int(ran[1]), ran[2] if len(ran) > 2 else "")
    return judge_host_commands(results)


def _status_line(tally: Tally, label: str, left: float) -> str:
    parts = []
    for check, sample in tally.last_values():
        if sample is None:
            continue
        parts.append(f"{check.name} {sample.text} ({check.threshold_text()}) {SHOWN_OUTCOME[sample.outcome]}")
    return f"  watch {label}: {left:.0f}s left: " + "; ".join(parts)
