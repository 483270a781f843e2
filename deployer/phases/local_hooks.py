"""Hooks on the machine running the tool (after_deploy_local, after_rollback_local)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass

from deployer.inventory import Inventory


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
