"""The "act" steps every operation is built from, each one remote script per host per phase.

stage (upload-unpack-link-validate), switch (hooks, switch, verify, record, health check, prune,
unlock: the one helper used by deploy, rollback and automatic revert), finish (bad mark, pin,
prune, unlock on hosts that are not switched), run_once (a migration on one host) and local
hooks. Results come back as values; nothing here prints except through `Progress`.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import posixpath
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from deployer import plan as planning
from deployer.errors import HostError, StepFailed
from deployer.fleet import Fleet, HostConnection, MappedArtifact
from deployer.inventory import Inventory
from deployer.lock import FleetLock, local_user, run_finish, utc_now
from deployer.plan import HostPlan
from deployer.release import Artifact
from deployer.report import Progress
from deployer.scripts import (
    EXIT_AFTER_ROLLBACK,
    EXIT_AFTER_SWITCH,
    EXIT_BEFORE_SWITCH,
    EXIT_HEALTH,
    EXIT_VALIDATE,
    command_line,
    parse_output,
)
from deployer.state import SchemaRecord

SWITCHED_BUT_FAILING = {
    EXIT_AFTER_SWITCH: "after_switch hook",
    EXIT_HEALTH: "health check",
    EXIT_AFTER_ROLLBACK: "after_rollback hook",
}


@dataclass
class Run:
    """One operation's open fleet, lock, progress and switches."""

    fleet: Fleet
    lock: FleetLock
    progress: Progress
    message: str = ""

    @property
    def inventory(self) -> Inventory:
        return self.fleet.inventory

    @property
    def run_id(self) -> str:
        return self.lock.token[:12]

    @functools.cached_property
    def environment(self) -> bytes:
        """The env block sent on stdin to every session that runs the user's commands (built once)."""
        return env_block(self.inventory)


def history_line(operation: str, before: str | None, target: str, message: str = "", run_id: str = "") -> str:
    record: dict[str, Any] = {
        "run": run_id,  # the same on every host for one operation: `inv history` merges by it
        "time": utc_now(),
        "op": operation,
        "from": before,
        "to": target,
        "user": local_user(),
        "controller": socket.gethostname(),
        "result": "ok",
    }
    if message:
        record["message"] = message
    return json.dumps(record, sort_keys=True)


def mark_info(why: str) -> str:
    return json.dumps({"why": why, "user": local_user(), "time": utc_now()}, sort_keys=True)


def pin_info(release: str, why: str) -> str:
    return json.dumps(
        {"release": release, "why": why, "user": local_user(), "time": utc_now(), "controller": socket.gethostname()},
        sort_keys=True,
    )


def env_block(inventory: Inventory) -> bytes:
    """The inventory's `env` as the block the remote scripts read from stdin (see read_env in lib.sh).

    The sudo password travels here too, as DEPLOYER_SUDO_PASSWORD: lib.sh keeps it in a shell
    variable for `sudo -S` and never exports it to any command.
    """
    pairs = [(var.name, var.value) for var in inventory.env]
    if inventory.sudo_password:
        pairs.append(("DEPLOYER_SUDO_PASSWORD", inventory.sudo_password))
    if not pairs:
        return b""
    lines = b"".join(name.encode() + b" " + base64.b64encode(value.encode("utf-8")) + b"\n" for name, value in pairs)
    return b"DEPLOYER-ENV %d\n" % len(lines) + lines


def schema_text(schema: SchemaRecord | None) -> str:
    return f"{schema.version} {schema.min_compatible} {schema.release}" if schema else ""


# --- stage ---


def stage(run: Run, artifact: Artifact, release: str, hosts: list[HostPlan]) -> dict[str, HostError]:
    """Upload (or reuse the cached tarball), unpack, link shared paths, validate: one session per host."""
    inventory = run.inventory
    sources = {host_plan.host: host_plan.source for host_plan in hosts}
    manifest = artifact.manifest
    staged_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # orders releases; never mtimes
    meta = " ".join(
        [staged_at, str(manifest.schema_version) if manifest else "-", str(manifest.min_schema) if manifest else "-"]
    )
    mapped = MappedArtifact(artifact.path)
    environment = run.environment
    failures: dict[str, HostError] = {}

    def work(connection: HostConnection) -> float:
        source = sources[connection.host.name]
        command = command_line(
            "stage",
            inventory.deploy_to_of(connection.host),
            release=release,
            digest=artifact.digest,
            source=source,
            validate=inventory.validate,
            meta=meta,
            shared="\n".join(inventory.shared),
            env="1" if environment else "",
        )
        upload = [environment] + ([mapped.view] if source == planning.UPLOAD else [])
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
        for host, outcome in run.fleet.map(work, targets):
            if isinstance(outcome, HostError):
                failures[host.name] = outcome
                run.progress.host(host.name, f"FAILED: {outcome.reason}")
            else:
                run.progress.host(host.name, f"staged and validated ({outcome:.2f}s)")
    finally:
        mapped.close()
    return failures


# --- switch ---


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


@dataclass(frozen=True)
class SwitchRequest:
    """What a switch phase does on each host beyond pointing `current` at the target."""

    mode: str  # deploy | rollback | revert
    operation: str  # what the history calls it
    unlock: bool = False  # release our lock on success (or always, for rollbacks and reverts)
    schema: SchemaRecord | None = None
    pin: str = ""  # JSON of the pin to set
    unpin: bool = False
    mark_bad: str = ""
    bad_info: str = ""
    prune: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def _switch_command(run: Run, host_plan: HostPlan, request: SwitchRequest) -> tuple[str, float]:
    inventory = run.inventory
    host = inventory.host(host_plan.host)
    target = host_plan.target or ""
    health = inventory.health_check
    options: dict[str, Any] = {
        "target": target,
        "expected": host_plan.expected_link,
        "mode": request.mode,
        "operation": request.operation,
        "previous": host_plan.previous_version if request.mode == "deploy" else "",
        "history": history_line(request.operation, host_plan.before, target, run.message, run.run_id),
        "run": run.run_id,
        "hook_timeout": f"{inventory.timeouts.hook:g}",
        "schema": schema_text(request.schema),
        "pin": request.pin,
        "unpin": "1" if request.unpin else "",
        "mark_bad": request.mark_bad,
        "bad_info": request.bad_info,
        "prune": " ".join(request.prune.get(host_plan.host, ())),
        "unlock": run.lock.token if request.unlock else "",
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
            health_timeout=f"{health.timeout:g}",
            health_retries=str(health.retries),
            health_interval=f"{health.interval:g}",
        )
        timeout += health.worst_case_seconds
    return command_line("switch", inventory.deploy_to_of(host), **options), timeout


def switch_host(connection: HostConnection, run: Run, host_plan: HostPlan, request: SwitchRequest) -> Switched:
    """Run the shared switch helper on one host and check its read-back against the plan."""
    target = host_plan.target or ""
    command, timeout = _switch_command(run, host_plan, request)
    result = connection.run(command, timeout=timeout, upload=[run.environment])
    output = parse_output(result.output)
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
    switched = Switched(
        link,
        resolved,
        result.seconds,
        unlocked=output.first("unlocked") is not None,
        pruned=[fields[0] for fields in output.all("pruned") if fields],
    )
    health = output.first("health")
    if health and health[0] == "ok":
        switched.health = f"healthy (attempt {health[1] if len(health) > 1 else '?'})"
    if status in SWITCHED_BUT_FAILING:
        what = SWITCHED_BUT_FAILING[status]
        detail = ""
        if status == EXIT_HEALTH and health and len(health) > 3:
            detail = f" after {health[1]} attempt(s), exit {health[2]}: {health[3]}".rstrip(": ")
        else:
            hook = next((fields for fields in output.all("hook") if len(fields) > 1 and fields[1] == "failed"), None)
            if hook:
                detail = f" (exit {hook[2]})" + (f": {hook[3]}" if len(hook) > 3 and hook[3] else "")
        switched.failing = f"{what} failed{detail}"
    return switched


def switch(run: Run, hosts: list[HostPlan], request: SwitchRequest) -> dict[str, Switched | HostError]:
    """The switch phase on `hosts`, in parallel; outcomes per host."""
    by_name = {host_plan.host: host_plan for host_plan in hosts}
    outcomes: dict[str, Switched | HostError] = {}

    def work(connection: HostConnection) -> Switched:
        return switch_host(connection, run, by_name[connection.host.name], request)

    targets = [run.inventory.host(name) for name in by_name]
    for host, outcome in run.fleet.map(work, targets):
        outcomes[host.name] = outcome
        if isinstance(outcome, HostError):
            run.progress.host(host.name, f"FAILED: {outcome.reason}")
            continue
        if outcome.unlocked:
            run.lock.held.discard(host.name)
        text = f"current -> {outcome.link} (verified)"
        if outcome.health:
            text += f", {outcome.health}"
        if outcome.pruned:
            text += f", pruned {len(outcome.pruned)} old release(s)"
        if outcome.failing:
            text += f"; FAILED: {outcome.failing}"
        run.progress.host(host.name, text)
    return outcomes


# --- finish: hosts that are not switched, or whose switch ran without releasing the lock ---


def finish(run: Run, hosts: list[str], unlock: bool = True, **options: Any) -> dict[str, str]:
    """Bad mark / pin / unpin / prune, then release our lock (when `unlock`), on `hosts`; failures by host."""
    prune: Mapping[str, tuple[str, ...]] = options.pop("prune", {})
    failures: dict[str, str] = {}
    options_of = {
        name: {
            "unlock": run.lock.token if unlock and name in run.lock.held else "",
            "prune": " ".join(prune.get(name, ())),
            **options,
        }
        for name in hosts
    }
    for name, outcome in run_finish(run.fleet, options_of, "finishing"):
        if isinstance(outcome, HostError):
            failures[name] = outcome.reason
            run.progress.host(name, f"warning: {outcome.reason}")
            continue
        if outcome.first("unlocked") is not None:
            run.lock.held.discard(name)
        pruned = [fields[0] for fields in outcome.all("pruned") if fields]
        if pruned:
            run.progress.host(name, f"pruned {len(pruned)} old release(s): {' '.join(pruned)}")
    return failures


# --- one-off commands (migrations) on one host ---


def run_once(
    run: Run, host: str, release: str, name: str, command: str, schema_from: int | None, schema_to: int | None
) -> str:
    """Run `command` once in releases/`release` on `host`; "" on success, else why it failed."""
    inventory = run.inventory
    line = command_line(
        "run",
        inventory.deploy_to_of(inventory.host(host)),
        release=release,
        name=name,
        command=command,
        timeout=f"{inventory.timeouts.migrate:g}",
        schema_from="" if schema_from is None else str(schema_from),
        schema_to="" if schema_to is None else str(schema_to),
        run=run.run_id,
        env="1" if run.environment else "",
    )
    environment = [run.environment]
    for _host, outcome in run.fleet.map(
        lambda connection: connection.run(line, timeout=inventory.timeouts.migrate + 10, upload=environment),
        [inventory.host(host)],
    ):
        if isinstance(outcome, HostError):
            return outcome.reason
        output = parse_output(outcome.output)
        if outcome.exit_status != 0:
            ran = output.first("ran") or []
            detail = f"exit {ran[1]}" + (f": {ran[2]}" if len(ran) > 2 and ran[2] else "") if len(ran) > 1 else ""
            return f"`{command}` failed on {host} ({detail or output.error_message()})"
    return ""


# --- hooks on the machine running the tool ---


@dataclass(frozen=True)
class LocalHookResult:
    name: str
    ok: bool
    seconds: float
    detail: str = ""


def run_local_hook(inventory: Inventory, name: str, environment: Mapping[str, str]) -> LocalHookResult | None:
    """Run hook `name` on this machine (cwd: the inventory's folder), bounded by timeouts.hook."""
    command = inventory.hook(name)
    if not command:
        return None
    started = time.monotonic()
    env = {
        **os.environ,
        **{var.name: var.value for var in inventory.env},
        **environment,
        "DEPLOYER_INVENTORY": os.path.abspath(inventory.path),
    }
    try:
        done = subprocess.run(
            ["sh", "-c", command],
            cwd=os.path.dirname(os.path.abspath(inventory.path)),
            env=env,
            capture_output=True,
            text=True,
            timeout=inventory.timeouts.hook,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return LocalHookResult(
            name, False, time.monotonic() - started, f"did not finish in {inventory.timeouts.hook:g}s"
        )
    except OSError as exc:
        return LocalHookResult(name, False, time.monotonic() - started, f"could not start: {exc}")
    tail = " | ".join(line.strip() for line in (done.stdout + done.stderr).splitlines()[-3:] if line.strip())
    if done.returncode != 0:
        return LocalHookResult(
            name, False, time.monotonic() - started, f"exited {done.returncode}: {tail}".rstrip(": ")
        )
    return LocalHookResult(name, True, time.monotonic() - started, tail)
