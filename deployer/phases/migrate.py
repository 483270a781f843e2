"""A migration (`migrate` at a deploy, `rollback_migrations` at a rollback): run once, on one host."""

from __future__ import annotations

import time

from deployer.connection import HostConnection
from deployer.errors import HostError
from deployer.lock import utc_now
from deployer.phases.run import Run, whole_seconds
from deployer.report import OperationReport, Phase
from deployer.scripts import (
    ScriptResult,
    run_script,
)


def run_once(
    run: Run, host: str, release: str, name: str, command: str, schema_from: int | None, schema_to: int | None
) -> str:
    """Run `command` once in releases/`release` on `host`; "" on success, else why it failed."""
    inventory = run.inventory
    options = {
        "release": release,
        "name": name,
        "command": command,
        "timeout": whole_seconds(inventory.timeouts.migrate),
        "schema_from": "" if schema_from is None else str(schema_from),
        "schema_to": "" if schema_to is None else str(schema_to),
        "run": run.run_id,
        "fence": run.lock.token,
        "env": "1" if run.environment else "",
        "now": utc_now(),
    }
    environment = [run.environment]
    deploy_to = inventory.deploy_to_of(inventory.host(host))

    def work(connection: HostConnection) -> ScriptResult:
        limit = inventory.timeouts.migrate + 10
        return run_script(connection, "run", deploy_to, session_timeout=limit, upload=environment, gate=None, **options)

    for _host, outcome in run.fleet.map(work, [inventory.host(host)]):
        if isinstance(outcome, HostError):
            return outcome.reason
        output = outcome.output
        if outcome.exit_status != 0:
            ran = output.first("ran") or []
            detail = f"exit {ran[1]}" + (f": {ran[2]}" if len(ran) > 2 and ran[2] else "") if len(ran) > 1 else ""
            return f"`{command}` failed on {host} ({detail or output.error_message()})"
    return ""


def migrate_once(
    run: Run,
    report: OperationReport,
    name: str,
    release: str,
    hosts: list[str],
    schema_from: int | None,
    schema_to: int | None,
) -> bool:
    """Run the inventory's migration `name` once, in releases/`release` on the first of `hosts` in
    inventory order, as a phase of `report`; False (the problem in the report) when it failed."""
    inventory = run.inventory
    first = [host.name for host in inventory.hosts if host.name in hosts][0]
    started = time.monotonic()
    run.progress.say(f"running {name} once on {first} (schema {schema_from} -> {schema_to})")
    problem = run_once(run, first, release, name, getattr(inventory, name), schema_from, schema_to)
    report.phases.append(Phase(name, time.monotonic() - started, not problem, problem))
    if problem:
        report.problems.append(f"{name} failed: {problem}")
    return not problem
