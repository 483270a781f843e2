"""One operation's open fleet, lock and progress (`Run`), and the records the act steps write on
hosts: history lines, bad marks, pins (JSON), the env block sent on stdin."""

from __future__ import annotations

import functools
import json
import math
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deployer.fleet import Fleet
from deployer.inventory import Inventory
from deployer.lock import FleetLock, local_user, utc_now
from deployer.report import Progress
from deployer.revision import Revision
from deployer.scripts import octal_escaped
from deployer.state import HostState, SchemaRecord


@dataclass
class Run:
    """One operation's open fleet, lock, progress and switches."""

    fleet: Fleet
    lock: FleetLock
    progress: Progress
    message: str = ""
    drill_phase: str = ""  # set by the drill: its switches are recorded as phases of one drill
    revisions: dict[str, Revision] = field(default_factory=dict)  # release id -> version/commit known

    def revision_of(self, release: str | None) -> Revision:
        return self.revisions.get(release or "", Revision())

    def learn_revisions(self, states: Mapping[str, HostState]) -> None:
        """Remember the version and commit each release was staged with (for the history lines)."""
        for state in states.values():
            for release_id, info in state.releases.items():
                if info.version or info.commit:
                    self.revisions.setdefault(release_id, info.revision)

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
    operation: str,
    before: str | None,
    target: str,
    message: str = "",
    run_id: str = "",
    drill: str = "",
    revision: Revision | None = None,
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
    if revision is not None:
        record.update({key: value for key, value in revision.as_dict().items() if key in ("version", "commit")})
    return json.dumps(record, sort_keys=True)


def mark_info(why: str) -> str:
    return json.dumps({"why": why, "user": local_user(), "time": utc_now()}, sort_keys=True)


def pin_info(release: str, why: str, revision: Revision | None = None) -> str:
    """The pin a rollback leaves: the release (and its version and commit: what the fleet now tracks)."""
    record: dict[str, Any] = {
        "release": release,
        "why": why,
        "user": local_user(),
        "time": utc_now(),
        "controller": socket.gethostname(),
    }
    if revision is not None:
        record.update({key: value for key, value in revision.as_dict().items() if key in ("version", "commit")})
    return json.dumps(record, sort_keys=True)


def env_block(inventory: Inventory, artifact_url: str = "") -> bytes:
    """The inventory's `env` as the block the remote scripts read from stdin (see read_env in lib.sh).

    The sudo password travels here too, as DEPLOYER_SUDO_PASSWORD, and a pull deploy's artifact URL
    as DEPLOYER_ARTIFACT_URL (a presigned URL is a credential): lib.sh keeps both in shell
    variables and never exports them to any command.
    """
    pairs = [(var.name, var.value) for var in inventory.env]
    if inventory.sudo_password:
        pairs.append(("DEPLOYER_SUDO_PASSWORD", inventory.sudo_password))
    if artifact_url:
        pairs.append(("DEPLOYER_ARTIFACT_URL", artifact_url))
    if not pairs:
        return b""
    lines = "".join(f"{name} {octal_escaped(value)}\n" for name, value in pairs).encode("ascii")
    return b"DEPLOYER-ENV %d\n" % len(lines) + lines


def whole_seconds(seconds: float) -> str:
    """A time limit for the remote scripts: whole seconds, rounded up (fractions are not POSIX `sleep`)."""
    return str(max(1, math.ceil(seconds)))


def schema_text(schema: SchemaRecord | None) -> str:
    return f"{schema.version} {schema.min_compatible} {schema.release}" if schema else ""
