"""The operations: deploy, rollback, rollback drill, and the commands that read or tidy fleet state.

Each follows the same flow over one `Fleet` (one connection per host for the whole operation):
take the lock while reading state (`session`, `deployer.lock`) -> plan (pure, `deployer.plan`) ->
show -> act (`deployer.phases`: stage, switch, finish) -> verify (from what the switch read back)
-> report. One module per workflow:

- `session`: the run's lifecycle (fleet, lock, Ctrl-C), shared by every workflow
- `deploy`, `rollback`, `drill`: the workflows that switch hosts
- `views`: status, history, releases (read only); `admin`: unpin, prune, unlock, place-signers
- `watch`: `deployer watch`, a live fleet watched (and rolled back when the watch fails)
- `outcome`: plans shown, and host outcomes as report rows
"""

from deployer.operations.admin import place_signers, prune, unlock, unpin
from deployer.operations.deploy import deploy, run_deploy
from deployer.operations.drill import drill
from deployer.operations.rollback import rollback, run_rollback
from deployer.operations.session import Options
from deployer.operations.views import (
    FleetView,
    check_rows,
    history_entries,
    history_records,
    read_fleet,
    releases_table,
    status_data,
    status_exit_code,
)
from deployer.operations.watch import watch_fleet

__all__ = [
    "FleetView",
    "Options",
    "place_signers",
    "check_rows",
    "deploy",
    "drill",
    "history_entries",
    "history_records",
    "prune",
    "read_fleet",
    "releases_table",
    "rollback",
    "run_deploy",
    "run_rollback",
    "status_data",
    "status_exit_code",
    "unlock",
    "unpin",
    "watch_fleet",
]
