"""The "act" steps every operation is built from: one module per remote script, each one session
per host per phase, each with its own request and result types.

- `stage`: upload-unpack-link-validate
- `switch`: the one switch helper of deploy, rollback and automatic revert
- `finish`: pin removal, pruning, the lock's release on hosts that were not switched
- `migrate`: a one-off command (migration) once on one host
- `local_hooks`: hooks on this machine
- `run`: the operation's `Run` and the records the steps write (history, marks, pins, env block)

Results come back as values; nothing here prints except through `Progress`.
"""

from deployer.phases.finish import finish
from deployer.phases.local_hooks import LocalHookResult, run_local_hook
from deployer.phases.migrate import migrate_once
from deployer.phases.run import Run, env_block, history_line, mark_info, pin_info
from deployer.phases.stage import stage
from deployer.phases.switch import Switched, SwitchRequest, switch, switch_host

__all__ = [
    "LocalHookResult",
    "Run",
    "SwitchRequest",
    "Switched",
    "env_block",
    "finish",
    "history_line",
    "mark_info",
    "pin_info",
    "run_local_hook",
    "migrate_once",
    "stage",
    "switch",
    "switch_host",
]
