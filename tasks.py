"""invoke tasks: deploy, rollback, rollback-drill; status, history, releases; lock, pin, prune; the local fleet.

Thin on purpose: arguments are parsed here; the work happens in `deployer` (see deployer/cli.py).
"""

from invoke import task

from deployer import cli
from deployer.operations import Options

INVENTORY_HELP = "inventory YAML file (default: $DEPLOYER_INVENTORY)"
COMMON_HELP = {
    "inventory": INVENTORY_HELP,
    "json": "print one JSON document instead of text",
    "parallel": "hosts worked on at once (default: inventory's parallel, else 32)",
    "accept-new-host-keys": "LOUD opt-in: add unknown host keys to known_hosts (changed keys are still refused)",
}


LOCK_HELP = {
    "lock-wait": "seconds to wait for another operation's lock (default: refuse at once)",
    "message": "why: recorded in the lock, history, pin and bad marks",
}


def _options(parallel: int, accept_new_host_keys: bool, dry_run: bool = False, **extra) -> Options:
    return Options(
        accept_new_host_keys=accept_new_host_keys,
        parallel=parallel or None,
        dry_run=dry_run,
        force=extra.get("force", False),
        unpin=extra.get("unpin", False),
        lock_wait=cli.seconds(extra.get("lock_wait"), "--lock-wait"),
        message=extra.get("message") or "",
    )


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
    c,
    inventory=None,
    artifact=None,
    release=None,
    dry_run=False,
    force=False,
    unpin=False,
    lock_wait=None,
    message=None,
    json=False,
    parallel=0,
    accept_new_host_keys=False,
):
    """Stage a release on every host, validate it, then switch `current` atomically (in batches) and verify."""
    options = _options(
        parallel, accept_new_host_keys, dry_run, force=force, unpin=unpin, lock_wait=lock_wait, message=message
    )
    cli.guarded(lambda: cli.deploy(inventory, artifact, release, options, json))


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
    c,
    inventory=None,
    to=None,
    dry_run=False,
    force=False,
    lock_wait=None,
    message=None,
    json=False,
    parallel=0,
    accept_new_host_keys=False,
):
    """Point `current` back to the previous release on every host in parallel, verify, pin, mark bad."""
    options = _options(parallel, accept_new_host_keys, dry_run, force=force, lock_wait=lock_wait, message=message)
    cli.guarded(lambda: cli.rollback(inventory, to, options, json))


@task(name="rollback-drill", help={**COMMON_HELP, **LOCK_HELP, "artifact": "the new version to drill with"})
def rollback_drill(
    c, inventory=None, artifact=None, lock_wait=None, message=None, json=False, parallel=0, accept_new_host_keys=False
):
    """Deploy the artifact, roll back, deploy again, verifying each step (integration fleets)."""
    options = _options(parallel, accept_new_host_keys, lock_wait=lock_wait, message=message)
    cli.guarded(lambda: cli.drill(inventory, artifact, options, json))


@task(help=COMMON_HELP)
def status(c, inventory=None, json=False, parallel=0, accept_new_host_keys=False):
    """Each host's current and previous release and problems; the fleet's split, pin, lock and schema."""
    cli.guarded(lambda: cli.status(inventory, _options(parallel, accept_new_host_keys), json))


@task(help={**COMMON_HELP, "limit": "events to show (newest first)"})
def history(c, inventory=None, limit=20, json=False, parallel=0, accept_new_host_keys=False):
    """The fleet's deploys, rollbacks, reverts, hook and health failures, newest first."""
    cli.guarded(lambda: cli.history(inventory, int(limit), _options(parallel, accept_new_host_keys), json))


@task(help=COMMON_HELP)
def releases(c, inventory=None, json=False, parallel=0, accept_new_host_keys=False):
    """Per release: hosts that have it, current, previous, bad, failed, pinned."""
    cli.guarded(lambda: cli.releases(inventory, _options(parallel, accept_new_host_keys), json))


@task(name="lock-status", help=COMMON_HELP)
def lock_status(c, inventory=None, json=False, parallel=0, accept_new_host_keys=False):
    """Who holds the fleet lock, and whether it was left by a run that is gone (exit 1 when locked)."""
    cli.guarded(lambda: cli.lock_status(inventory, _options(parallel, accept_new_host_keys), json))


@task(help={**COMMON_HELP, "yes": "do not ask for confirmation (scripts)"})
def unlock(c, inventory=None, yes=False, json=False, parallel=0, accept_new_host_keys=False):
    """Remove a fleet lock left by a killed run, after confirmation."""
    cli.guarded(lambda: cli.unlock(inventory, yes, _options(parallel, accept_new_host_keys), json))


@task(help={**COMMON_HELP, **LOCK_HELP})
def unpin(c, inventory=None, lock_wait=None, message=None, json=False, parallel=0, accept_new_host_keys=False):
    """Allow deploys again after a rollback pinned the fleet."""
    options = _options(parallel, accept_new_host_keys, lock_wait=lock_wait, message=message)
    cli.guarded(lambda: cli.unpin(inventory, options, json))


@task(help={**COMMON_HELP, **LOCK_HELP, "dry-run": "show what would be removed, change nothing"})
def prune(
    c, inventory=None, dry_run=False, lock_wait=None, message=None, json=False, parallel=0, accept_new_host_keys=False
):
    """Remove releases beyond keep_releases (never current, previous, pinned, or in use anywhere)."""
    options = _options(parallel, accept_new_host_keys, dry_run, lock_wait=lock_wait, message=message)
    cli.guarded(lambda: cli.prune(inventory, options, json))


@task(
    name="fleet-up",
    help={
        "hosts": "number of hosts",
        "state-dir": "where keys, hosts and inventory live",
        "subnet": "127.X.Y prefix of the host addresses",
        "port": "sshd port on each host",
    },
)
def fleet_up(c, hosts=3, state_dir=None, subnet="127.0.1", port=2222):
    """Start a local fleet of real sshd hosts (root; installs openssh-server if missing)."""
    cli.guarded(lambda: cli.fleet_up(hosts, state_dir, subnet, port))


@task(name="fleet-down", help={"state-dir": "the fleet's folder (default: .fleet)"})
def fleet_down(c, state_dir=None):
    """Stop the local fleet's hosts (only the processes it started)."""
    cli.guarded(lambda: cli.fleet_down(state_dir))


@task(name="build-sample", help={"version": "text for the VERSION file", "out": "output .tar.gz"})
def build_sample(c, version="v1", out="dist/app.tar.gz"):
    """Pack the sample app from sample-app/ with the given VERSION."""
    cli.guarded(lambda: print(cli.build_sample(version, out)) or 0)


@task
def demo(c):
    """The main job on a 3-host local fleet: deploy v1, deploy v2, rollback, drill, status."""
    cli.guarded(cli.demo)
