"""invoke tasks: deploy, rollback, rollback-drill; status, history, releases; lock, pin, prune; the local fleet.

Thin on purpose: arguments are parsed here; the work happens in `deployer` (see deployer/cli.py).
The same tasks are `inv <task>` (through the repository's tasks.py) and `deployer <task>` (the
installed command, deployer/console.py).
"""

import importlib
from typing import TYPE_CHECKING, Any

from invoke import Context, task

if TYPE_CHECKING:
    from deployer import cli
    from deployer.operations import Options
else:

    class _Lazy:
        """A module imported on first use: `inv --list` and `--help` need neither paramiko nor fabric."""

        def __init__(self, name: str) -> None:
            self._name = name

        def __getattr__(self, attribute: str) -> Any:
            return getattr(importlib.import_module(self._name), attribute)

    cli = _Lazy("deployer.cli")

INVENTORY_HELP = "inventory YAML file (default: $DEPLOYER_INVENTORY)"
COMMON_HELP = {
    "inventory": INVENTORY_HELP,
    "json": "print one JSON document instead of text",
    "parallel": "hosts worked on at once (default: inventory's parallel, else 32)",
    "accept-new-host-keys": "LOUD opt-in: add unknown host keys to known_hosts (changed keys are still refused)",
    "hosts": "only these hosts of the inventory (comma-separated names)",
    "group": "only the members of these groups (comma-separated)",
    "verbose": "also show debug lines (connections, each remote step's exit and time) on stderr",
}


LOCK_HELP = {
    "lock-wait": "seconds to wait for another operation's lock (default: refuse at once)",
    "message": "why: recorded in the lock, history, pin and bad marks",
}


def _options(parallel: int, accept_new_host_keys: bool, dry_run: bool = False, **extra: Any) -> "Options":
    from deployer.operations import Options  # noqa: PLC0415 - imported when a task runs, not at start-up

    return Options(
        accept_new_host_keys=accept_new_host_keys,
        parallel=parallel or None,
        dry_run=dry_run,
        force=extra.get("force", False),
        unpin=extra.get("unpin", False),
        lock_wait=cli.seconds(extra.get("lock_wait"), "--lock-wait"),
        message=extra.get("message") or "",
        hosts=_names(extra.get("hosts")),
        groups=_names(extra.get("group")),
    )


def _names(value: str | None) -> tuple[str, ...]:
    return tuple(name.strip() for name in (value or "").split(",") if name.strip())


@task(
    help={
        **COMMON_HELP,
        **LOCK_HELP,
        "artifact": ".tar.gz (or folder) whose contents become the release",
        "release": "release id (default: UTC time + artifact digest)",
        "dry-run": "show the plan (what switches, what is pruned), change nothing",
        "force": "converge a split fleet on this release; deploy despite the schema check",
        "unpin": "remove the pin a rollback left (the fix is ready)",
    }
)
def deploy(
    c: Context,
    inventory: str | None = None,
    verbose: bool = False,
    hosts: str | None = None,
    group: str | None = None,
    artifact: str | None = None,
    release: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    unpin: bool = False,
    lock_wait: str | None = None,
    message: str | None = None,
    json: bool = False,
    parallel: int = 0,
    accept_new_host_keys: bool = False,
) -> None:
    """Stage a release on every host, validate it, then switch `current` atomically (in batches) and verify."""
    options = _options(
        parallel,
        accept_new_host_keys,
        dry_run,
        force=force,
        unpin=unpin,
        lock_wait=lock_wait,
        message=message,
        hosts=hosts,
        group=group,
    )
    cli.guarded(lambda: cli.deploy(inventory, artifact, release, options, json), "deploy", verbose)


@task(
    help={
        **COMMON_HELP,
        **LOCK_HELP,
        "to": "release id to roll back to (default: the fleet's previous release that is not marked bad)",
        "dry-run": "show the plan, change nothing",
        "force": "roll back even though the target cannot run against the recorded database schema",
    }
)
def rollback(
    c: Context,
    inventory: str | None = None,
    verbose: bool = False,
    hosts: str | None = None,
    group: str | None = None,
    to: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    lock_wait: str | None = None,
    message: str | None = None,
    json: bool = False,
    parallel: int = 0,
    accept_new_host_keys: bool = False,
) -> None:
    """Point `current` back to the previous release on every host in parallel, verify, pin, mark bad."""
    options = _options(
        parallel,
        accept_new_host_keys,
        dry_run,
        force=force,
        lock_wait=lock_wait,
        message=message,
        hosts=hosts,
        group=group,
    )
    cli.guarded(lambda: cli.rollback(inventory, to, options, json), "rollback", verbose)


@task(
    name="rollback-drill",
    help={
        **COMMON_HELP,
        **LOCK_HELP,
        "artifact": "the new version to drill with",
        "junit": "also write a JUnit XML report (one test case per phase and host) to this file",
        "verify": "run the testinfra checks (inv verify) after each phase (default on; --no-verify to skip)",
    },
)
def rollback_drill(
    c: Context,
    inventory: str | None = None,
    verbose: bool = False,
    hosts: str | None = None,
    group: str | None = None,
    artifact: str | None = None,
    junit: str | None = None,
    verify: bool = True,
    lock_wait: str | None = None,
    message: str | None = None,
    json: bool = False,
    parallel: int = 0,
    accept_new_host_keys: bool = False,
) -> None:
    """Deploy the artifact, roll back, deploy again, verifying each step (integration fleets)."""
    options = _options(parallel, accept_new_host_keys, lock_wait=lock_wait, message=message, hosts=hosts, group=group)
    cli.guarded(lambda: cli.drill(inventory, artifact, options, json, junit, verify), "rollback-drill", verbose)


@task(help=COMMON_HELP)
def status(
    c: Context,
    inventory: str | None = None,
    verbose: bool = False,
    hosts: str | None = None,
    group: str | None = None,
    json: bool = False,
    parallel: int = 0,
    accept_new_host_keys: bool = False,
) -> None:
    """Each host's current and previous release and problems; the fleet's split, pin, lock and schema."""
    cli.guarded(
        lambda: cli.status(inventory, _options(parallel, accept_new_host_keys, hosts=hosts, group=group), json),
        "status",
        verbose,
    )


@task(help={**COMMON_HELP, "limit": "events to show (newest first)"})
def history(
    c: Context,
    inventory: str | None = None,
    verbose: bool = False,
    hosts: str | None = None,
    group: str | None = None,
    limit: int = 20,
    json: bool = False,
    parallel: int = 0,
    accept_new_host_keys: bool = False,
) -> None:
    """The fleet's deploys, rollbacks, reverts, hook and health failures, newest first."""
    cli.guarded(
        lambda: cli.history(
            inventory, int(limit), _options(parallel, accept_new_host_keys, hosts=hosts, group=group), json
        )
    )


@task(help=COMMON_HELP)
def releases(
    c: Context,
    inventory: str | None = None,
    verbose: bool = False,
    hosts: str | None = None,
    group: str | None = None,
    json: bool = False,
    parallel: int = 0,
    accept_new_host_keys: bool = False,
) -> None:
    """Per release: hosts that have it, current, previous, bad, failed, pinned."""
    cli.guarded(
        lambda: cli.releases(inventory, _options(parallel, accept_new_host_keys, hosts=hosts, group=group), json)
    )


@task(name="lock-status", help=COMMON_HELP)
def lock_status(
    c: Context,
    inventory: str | None = None,
    verbose: bool = False,
    hosts: str | None = None,
    group: str | None = None,
    json: bool = False,
    parallel: int = 0,
    accept_new_host_keys: bool = False,
) -> None:
    """Who holds the fleet lock, and whether it was left by a run that is gone (exit 1 when locked)."""
    cli.guarded(
        lambda: cli.lock_status(inventory, _options(parallel, accept_new_host_keys, hosts=hosts, group=group), json)
    )


@task(help={**COMMON_HELP, "yes": "do not ask for confirmation (scripts)"})
def unlock(
    c: Context,
    inventory: str | None = None,
    verbose: bool = False,
    hosts: str | None = None,
    group: str | None = None,
    yes: bool = False,
    json: bool = False,
    parallel: int = 0,
    accept_new_host_keys: bool = False,
) -> None:
    """Remove a fleet lock left by a killed run, after confirmation."""
    cli.guarded(
        lambda: cli.unlock(inventory, yes, _options(parallel, accept_new_host_keys, hosts=hosts, group=group), json)
    )


@task(help={**COMMON_HELP, **LOCK_HELP})
def unpin(
    c: Context,
    inventory: str | None = None,
    verbose: bool = False,
    hosts: str | None = None,
    group: str | None = None,
    lock_wait: str | None = None,
    message: str | None = None,
    json: bool = False,
    parallel: int = 0,
    accept_new_host_keys: bool = False,
) -> None:
    """Allow deploys again after a rollback pinned the fleet."""
    options = _options(parallel, accept_new_host_keys, lock_wait=lock_wait, message=message, hosts=hosts, group=group)
    cli.guarded(lambda: cli.unpin(inventory, options, json), "unpin", verbose)


@task(help={**COMMON_HELP, **LOCK_HELP, "dry-run": "show what would be removed, change nothing"})
def prune(
    c: Context,
    inventory: str | None = None,
    verbose: bool = False,
    hosts: str | None = None,
    group: str | None = None,
    dry_run: bool = False,
    lock_wait: str | None = None,
    message: str | None = None,
    json: bool = False,
    parallel: int = 0,
    accept_new_host_keys: bool = False,
) -> None:
    """Remove releases beyond keep_releases (never current, previous, pinned, or in use anywhere)."""
    options = _options(
        parallel, accept_new_host_keys, dry_run, lock_wait=lock_wait, message=message, hosts=hosts, group=group
    )
    cli.guarded(lambda: cli.prune(inventory, options, json), "prune", verbose)


@task(
    name="fleet-up",
    help={
        "hosts": "number of hosts",
        "state-dir": "where keys, hosts and inventory live",
        "subnet": "127.X.Y prefix of the host addresses",
        "port": "sshd port on each host",
    },
)
def fleet_up(
    c: Context, hosts: int = 3, state_dir: str | None = None, subnet: str = "127.0.1", port: int = 2222
) -> None:
    """Start a local fleet of real sshd hosts (root; installs openssh-server if missing)."""
    cli.guarded(lambda: cli.fleet_up(hosts, state_dir, subnet, port))


@task(name="fleet-down", help={"state-dir": "the fleet's folder (default: .fleet)"})
def fleet_down(c: Context, state_dir: str | None = None) -> None:
    """Stop the local fleet's hosts (only the processes it started)."""
    cli.guarded(lambda: cli.fleet_down(state_dir))


@task(
    help={
        **COMMON_HELP,
        "release": "the release every host must be on (default: the one the fleet is on)",
        "junit": "also write the checks' JUnit XML to this file",
    }
)
def verify(
    c: Context,
    inventory: str | None = None,
    release: str | None = None,
    junit: str | None = None,
    json: bool = False,
    verbose: bool = False,
    hosts: str | None = None,
    group: str | None = None,
    parallel: int = 0,
    accept_new_host_keys: bool = False,
) -> None:
    """Check every host over OpenSSH (testinfra): current, previousVersion, lock, shared paths, health."""
    options = _options(parallel, accept_new_host_keys, hosts=hosts, group=group)
    cli.guarded(lambda: cli.verify(inventory, release, junit, options, json), "verify", verbose)


@task(
    name="vagrant-inventory",
    help={
        "ssh-config": "saved `vagrant ssh-config` output (default: run it in vagrant/)",
        "out": "inventory to write (its known_hosts goes next to it)",
    },
)
def vagrant_inventory(c: Context, ssh_config: str | None = None, out: str = "inventories/vagrant.yml") -> None:
    """Write an inventory (and known_hosts, by ssh-keyscan) for the Vagrant fleet in vagrant/."""
    cli.guarded(lambda: cli.vagrant_inventory(ssh_config, out))


@task(name="build-sample", help={"version": "text for the VERSION file", "out": "output .tar.gz"})
def build_sample(c: Context, version: str = "v1", out: str = "dist/app.tar.gz") -> None:
    """Pack the sample app from sample-app/ with the given VERSION."""
    cli.guarded(lambda: print(cli.build_sample(version, out)) or 0)


@task
def demo(c: Context) -> None:
    """The main job on a 3-host local fleet: deploy v1, v2, rollback (pin), unpin, drill, history, status."""
    cli.guarded(cli.demo)
