"""invoke tasks: `inv deploy`, `inv rollback`, `inv rollback-drill`, `inv status`, the local fleet.

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


def _options(parallel: int, accept_new_host_keys: bool, dry_run: bool = False) -> Options:
    return Options(accept_new_host_keys=accept_new_host_keys, parallel=parallel or None, dry_run=dry_run)


@task(
    help={
        **COMMON_HELP,
        "artifact": ".tar.gz (or folder) whose contents become the release",
        "release": "release id (default: UTC time + artifact digest)",
        "dry-run": "show the plan, change nothing",
    }
)
def deploy(
    c,
    inventory=None,
    artifact=None,
    release=None,
    dry_run=False,
    json=False,
    parallel=0,
    accept_new_host_keys=False,
):
    """Stage a release on every host, validate it, then switch `current` atomically and verify."""
    cli.guarded(
        lambda: cli.deploy(inventory, artifact, release, _options(parallel, accept_new_host_keys, dry_run), json)
    )


@task(
    help={
        **COMMON_HELP,
        "to": "release id to roll back to (default: the fleet's previousVersion)",
        "dry-run": "show the plan, change nothing",
    }
)
def rollback(c, inventory=None, to=None, dry_run=False, json=False, parallel=0, accept_new_host_keys=False):
    """Point `current` back to the previous release on every host in parallel, and verify."""
    cli.guarded(lambda: cli.rollback(inventory, to, _options(parallel, accept_new_host_keys, dry_run), json))


@task(name="rollback-drill", help={**COMMON_HELP, "artifact": "the new version to drill with"})
def rollback_drill(c, inventory=None, artifact=None, json=False, parallel=0, accept_new_host_keys=False):
    """Deploy the artifact, roll back, deploy again, verifying each step (integration fleets)."""
    cli.guarded(lambda: cli.drill(inventory, artifact, _options(parallel, accept_new_host_keys), json))


@task(help=COMMON_HELP)
def status(c, inventory=None, json=False, parallel=0, accept_new_host_keys=False):
    """Show each host's current and previous release, its releases and any problem."""
    cli.guarded(lambda: cli.status(inventory, _options(parallel, accept_new_host_keys), json))


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
