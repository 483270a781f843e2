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
import math
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
from deployer.protocol import ProtocolError
from deployer.release import Artifact
from deployer.report import Progress
from deployer.scripts import (
    EXIT_AFTER_ROLLBACK,
    EXIT_AFTER_SWITCH,
    EXIT_BEFORE_SWITCH,
    EXIT_HEALTH,
    EXIT_VALIDATE,
    ScriptResult,
    run_script,
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
    drill_phase: str = ""  # set by the drill: its switches are recorded as phases of one drill

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


def history_line(
    operation: str, before: str | None, target: str, message: str = "", run_id: str = "", drill: str = ""
) -> str:
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
    if drill:
        record["drill"] = drill  # the drill phase: `inv history` shows one drill, with its phases
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


def whole_seconds(seconds: float) -> str:
    """A time limit for the remote scripts: whole seconds, rounded up (fractions are not POSIX `sleep`)."""
    return str(max(1, math.ceil(seconds)))


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
        upload = [environment] + ([mapped.view] if source == planning.UPLOAD else [])
        result = run_script(
            connection,
            "stage",
            inventory.deploy_to_of(connection.host),
            session_timeout=inventory.timeouts.stage,
            upload=upload,
            release=release,
            digest=artifact.digest,
            source=source,
            validate=inventory.validate,
            validate_timeout=whole_seconds(inventory.timeouts.validate),
            meta=meta,
            shared="\n".join(inventory.shared),
            env="1" if environment else "",
            now=utc_now(),
        )
        output = result.output
        if result.exit_status != 0:
            step = "validation" if result.exit_status == EXIT_VALIDATE else "staging"
            message = output.error_message()
            failed = output.first("validate_failed")
            if result.exit_status == EXIT_VALIDATE and failed is not None:
                code, tail = failed[0], failed[1].strip()
                message = f"`{inventory.validate}` exited {code}" + (f": {tail}" if tail else "")
                if code == "124":
                    message += f" (stopped after timeouts.validate = {inventory.timeouts.validate:g}s)"
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
    except BaseException:
        run.fleet.settle()  # Ctrl-C: stop the uploads and wait for them before the map goes away
        raise
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
        "history": history_line(request.operation, host_plan.before, target, run.message, run.run_id, run.drill_phase),
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
        )
        timeout += health.worst_case_seconds
    return options, timeout


def switch_host(connection: HostConnection, run: Run, host_plan: HostPlan, request: SwitchRequest) -> Switched:
    """Run the shared switch helper on one host and check its read-back against the plan."""
    target = host_plan.target or ""
    options, timeout = _switch_options(run, host_plan, request)
    deploy_to = run.inventory.deploy_to_of(connection.host)
    result = run_script(connection, "switch", deploy_to, session_timeout=timeout, upload=[run.environment], **options)
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
    switched = Switched(
        link,
        resolved,
        result.seconds,
        unlocked=output.has("unlocked"),
        pruned=[fields[0] for fields in output.all("pruned")],
        switched=output.has("switched"),
        confirmed=frozenset(key for key in ("pinned", "marked_bad", "history_written") if output.has(key)),
        warnings=output.warnings(),
    )
    if switched.switched and "history_written" not in switched.confirmed and not switched.warnings:
        switched.warnings.append("the host did not confirm writing its history line")
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
    """Bad mark / pin / unpin / prune, then release our lock (when `unlock`), on `hosts`.

    Returns failures by host, judged from the host's confirmation records (an error, a warning, or
    a missing `unpinned`/`unlocked` confirmation is a failure), never from the exit status alone.
    Hosts where there is nothing to do are not contacted.
    """
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
    options_of = {name: wanted for name, wanted in options_of.items() if any(wanted.values())}
    for name, outcome in run_finish(run.fleet, options_of, "finishing"):
        if isinstance(outcome, HostError):
            failures[name] = outcome.reason
            run.progress.host(name, f"warning: {outcome.reason}")
            continue
        problems = outcome.warnings()
        if options_of[name]["unlock"]:
            if outcome.has("unlocked") or outcome.has("lock_absent") or outcome.has("lock_changed"):
                run.lock.held.discard(name)
            else:
                problems.append("the lock was not confirmed released")
        if options_of[name].get("unpin") and not (outcome.has("unpinned") or outcome.has("not_pinned")):
            problems.append("the pin was not confirmed removed")
        if options_of[name].get("mark_bad") and not outcome.has("marked_bad"):
            problems.append(f"release {options_of[name]['mark_bad']} was not confirmed marked bad")
        pruned = [fields[0] for fields in outcome.all("pruned")]
        if pruned:
            run.progress.host(name, f"pruned {len(pruned)} old release(s): {' '.join(pruned)}")
        if problems:
            failures[name] = "; ".join(problems)
            run.progress.host(name, f"warning: {failures[name]}")
    return failures


# --- one-off commands (migrations) on one host ---


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
        "env": "1" if run.environment else "",
        "now": utc_now(),
    }
    environment = [run.environment]
    deploy_to = inventory.deploy_to_of(inventory.host(host))

    def work(connection: HostConnection) -> ScriptResult:
        return run_script(
            connection, "run", deploy_to, session_timeout=inventory.timeouts.migrate + 10, upload=environment, **options
        )

    for _host, outcome in run.fleet.map(work, [inventory.host(host)]):
        if isinstance(outcome, HostError):
            return outcome.reason
        output = outcome.output
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
