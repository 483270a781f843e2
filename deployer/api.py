"""The Python API: deploy, rollback, drill and read a fleet from your own code; the CLI is one client of it.

    from deployer import api

    report = api.deploy("deploy.yml", "dist/app.tar.gz", message="release 42")
    if not report.ok:
        raise SystemExit(report.verdict())

Each function returns the operation's report as a value (`OperationReport`: `ok`, `exit_code`,
`verdict()`, per-host `hosts`, `phases`, `to_dict()` for JSON) and prints progress lines on
stderr unless `quiet=True`. A report is returned for every operation that ran, failed hosts
included; what stops an operation before it changes anything is raised as a `DeployerError`
(`InputError` for bad input, `PlanRefused` for a refused plan such as a drill's preconditions,
`LockHeld`, ...), each with the `exit_code` the CLI would use. `inventory` is a file name, or None to
find it as the CLI does (`$DEPLOYER_INVENTORY`, `./deploy.yml`, `./inventories/`).
"""

from __future__ import annotations

import dataclasses
import getpass
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypedDict

from deployer import operations
from deployer.errors import DeployerError, InputError, PlanRefused
from deployer.inventory import Inventory, load_inventory
from deployer.locate import find_inventory
from deployer.operations import Options
from deployer.report import HostResult, OperationReport, Phase, Progress
from deployer.revision import from_flags, pack_git
from deployer.scratch import Scratch

if TYPE_CHECKING:
    from typing_extensions import Unpack

PathLike = str | os.PathLike[str]
Check = Callable[[str], tuple[bool, str]]

__all__ = [
    "Check",
    "DeployerError",
    "Flags",
    "HostResult",
    "InputError",
    "OperationReport",
    "Phase",
    "PlanRefused",
    "Progress",
    "artifact_source",
    "deploy",
    "drill",
    "history",
    "open_inventory",
    "options",
    "rollback",
    "status",
]


class Flags(TypedDict, total=False):
    """The CLI's common flags, as keywords of every function here (see `options`)."""

    hosts: Iterable[str]
    groups: Iterable[str]
    message: str
    lock_wait: float
    parallel: int | None
    accept_new_host_keys: bool
    dry_run: bool
    force: bool
    unpin: bool
    watch: bool
    version: str | None
    commit: str | None
    signature: str | None
    pull: str
    sha256: str


def options(
    *,
    hosts: Iterable[str] = (),
    groups: Iterable[str] = (),
    message: str = "",
    lock_wait: float = 0.0,
    parallel: int | None = None,
    accept_new_host_keys: bool = False,
    dry_run: bool = False,
    force: bool = False,
    unpin: bool = False,
    watch: bool = True,
    version: str | None = None,
    commit: str | None = None,
    signature: str | None = None,
    pull: str = "",
    sha256: str = "",
) -> Options:
    """The operation's options (the CLI's flags), checked: a bad --commit is an `InputError`."""
    return Options(
        revision=from_flags(version, commit),
        signature=signature or None,
        pull=pull or "",
        sha256=(sha256 or "").lower(),
        accept_new_host_keys=accept_new_host_keys,
        parallel=parallel,
        dry_run=dry_run,
        force=force,
        unpin=unpin,
        no_watch=not watch,
        lock_wait=lock_wait,
        message=message,
        hosts=tuple(hosts),
        groups=tuple(groups),
    )


def open_inventory(path: PathLike | None, chosen: Options | None = None, runs_hooks: bool = False) -> Inventory:
    """The inventory to work on (found as `deployer.locate` says), narrowed to --hosts/--group.

    `runs_hooks`: the operation may run hooks, so a `sudo_password: ask` is asked now, once, for all
    hosts, on the terminal (refused without one: use `sudo_password_env` in CI and scripts).
    """
    found = find_inventory(os.fspath(path) if path is not None else None)
    logging.getLogger("deployer.api").debug("inventory: %s", found)
    inventory = load_inventory(found)
    if chosen is not None:
        inventory = inventory.select(chosen.hosts, chosen.groups)
    dry_run = chosen is not None and chosen.dry_run
    if runs_hooks and inventory.sudo_password_source == "ask" and inventory.uses_sudo and not dry_run:
        inventory = dataclasses.replace(inventory, sudo_password=_ask_sudo_password(inventory))
    return inventory


def _ask_sudo_password(inventory: Inventory) -> str:
    """The sudo password, asked once on the terminal (not echoed); refused without a terminal."""
    if not sys.stdin.isatty():
        raise InputError(
            f"{inventory.path}: sudo_password: ask needs a terminal to ask on; "
            "in CI use sudo_password_env: NAME (a variable holding the password)"
        )
    hosts = [host.name for host in inventory.hosts if host.sudo]
    users = sorted({host.user or inventory.user for host in inventory.hosts if host.sudo})
    listed = ", ".join(hosts[:5]) + (f" and {len(hosts) - 5} more" if len(hosts) > 5 else "")
    try:
        password = getpass.getpass(f"sudo password for {', '.join(users)} (hooks on {listed}): ")
    except EOFError:
        password = ""
    if not password:
        raise InputError("no sudo password given; nothing was changed")
    return password


@contextmanager
def artifact_source(
    artifact: PathLike | None, git: str | None, repo: PathLike | None, chosen: Options
) -> Iterator[tuple[str, Options]]:
    """The artifact to deploy: `artifact` as given, or `git` (a commit, branch or tag of `repo`) built
    by `git archive` into a temporary tarball (removed after), its revision added to the options."""
    if git and artifact:
        raise InputError("give --artifact or --git, not both")
    if not artifact and not git:
        raise InputError("no artifact given: pass --artifact PATH (a .tar.gz or a folder) or --git REF")
    with Scratch("git") as folder:
        source = os.fspath(artifact) if artifact else os.path.join(folder, "release.tar.gz")
        if git:
            built = pack_git(os.fspath(repo or "."), git, source)
            if chosen.revision.commit and chosen.revision.commit != built.commit:
                raise InputError(f"--commit {chosen.revision.commit} is not {git} ({built.commit})")
            chosen = dataclasses.replace(chosen, revision=chosen.revision.merged(built))
        yield source, chosen


def deploy(
    inventory: PathLike | None,
    artifact: PathLike | None = None,
    *,
    git: str | None = None,
    repo: PathLike | None = None,
    release: str | None = None,
    quiet: bool = False,
    progress: Progress | None = None,
    **flags: Unpack[Flags],
) -> OperationReport:
    """Stage `artifact` (a .tar.gz or a folder; or `git`, a ref of `repo`) on every host, validate,
    switch in batches, health-check, verify. `flags`: the keywords of `options()` (message, dry_run,
    force, unpin, hosts, groups, version, commit, lock_wait, parallel, accept_new_host_keys)."""
    chosen = options(**flags)
    fleet = open_inventory(inventory, chosen, runs_hooks=True)
    progress = progress or Progress(quiet=quiet)
    with artifact_source(artifact, git, repo, chosen) as (source, chosen):
        report = operations.deploy(fleet, source, release, chosen, progress)
    return report


def rollback(
    inventory: PathLike | None,
    to: str | None = None,
    *,
    quiet: bool = False,
    progress: Progress | None = None,
    **flags: Unpack[Flags],
) -> OperationReport:
    """Switch every host back to the previous good release (or `to`: a release id, version or commit
    prefix), verify, pin the fleet and mark the release left bad."""
    chosen = options(**flags)
    fleet = open_inventory(inventory, chosen, runs_hooks=True)
    progress = progress or Progress(quiet=quiet)
    return operations.rollback(fleet, to, chosen, progress)


def drill(
    inventory: PathLike | None,
    artifact: PathLike | None = None,
    *,
    git: str | None = None,
    repo: PathLike | None = None,
    check: Check | None = None,
    quiet: bool = False,
    progress: Progress | None = None,
    **flags: Unpack[Flags],
) -> OperationReport:
    """Deploy, roll back, deploy again, verifying each phase (`check(release) -> (ok, detail)` runs
    after each; the CLI passes the testinfra suite). Refused preconditions raise `PlanRefused`."""
    chosen = options(**flags)
    fleet = open_inventory(inventory, chosen, runs_hooks=True)
    progress = progress or Progress(quiet=quiet)
    with artifact_source(artifact, git, repo, chosen) as (source, chosen):
        report = operations.drill(fleet, source, chosen, progress=progress, check=check)
    return report


def status(inventory: PathLike | None, **flags: Unpack[Flags]) -> dict[str, Any]:
    """Each host's current and previous release, problems, lock, pin; the fleet's split (JSON-ready:
    the same document as `deployer status --json`; `exit_code` says what the CLI would exit with)."""
    chosen = options(**flags)
    view = operations.read_fleet(open_inventory(inventory, chosen), chosen)
    return {**operations.status_data(view), "exit_code": operations.status_exit_code(view)}


def history(inventory: PathLike | None, limit: int = 20, **flags: Unpack[Flags]) -> dict[str, Any]:
    """The fleet's events, newest first, and the hosts that could not be read."""
    chosen = options(**flags)
    view = operations.read_fleet(open_inventory(inventory, chosen), chosen, history=operations.history_records(limit))
    return {"history": operations.history_entries(view, limit), "unreachable": view.unreachable}
