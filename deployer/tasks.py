"""invoke tasks: deploy, rollback, rollback-drill; status, history, releases; lock, pin, prune; the local fleet.

Thin on purpose: arguments are parsed here; the work happens in `deployer` (see deployer/cli.py).
The same tasks are `inv <task>` (through the repository's tasks.py) and `deployer <task>` (the
installed command, deployer/console.py). The options every fleet task takes (inventory, hosts,
group, json, verbose, parallel, accept-new-host-keys; lock-wait and message for tasks that change
the fleet) are declared once, in `Common`, and added to each task by `fleet_task`.
"""

import dataclasses
import functools
import importlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from invoke import Collection, Context, task

from deployer.errors import InputError
from deployer.locate import named_inventory

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

COMMON_HELP = {
    "inventory": "inventory YAML file (default: $DEPLOYER_INVENTORY, deployer.inventory in invoke.yaml, "
    "./deploy.yml, the one file in ./inventories/)",
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
# In this order around each task's own options: invoke gives short flags (-i, -v, -h, -g, ...) to
# the first option that claims a letter, so the order keeps them the same on every task.
LEADING_DEFAULTS: dict[str, Any] = {"inventory": None, "verbose": False, "hosts": None, "group": None}
LOCK_DEFAULTS: dict[str, Any] = {"lock_wait": None, "message": None}
TRAILING_DEFAULTS: dict[str, Any] = {"json": False, "parallel": 0, "accept_new_host_keys": False}


@dataclass(frozen=True)
class Common:
    """The options shared by every fleet task, as the user gave them."""

    inventory: str | None = None
    hosts: str | None = None
    group: str | None = None
    json: bool = False
    verbose: bool = False
    parallel: int = 0
    accept_new_host_keys: bool = False
    lock_wait: str | None = None
    message: str | None = None
    config_problem: str | None = None  # what is wrong with invoke's configuration for deployer

    def options(
        self,
        dry_run: bool = False,
        force: bool = False,
        unpin: bool = False,
        version: str | None = None,
        commit: str | None = None,
        signature: str | None = None,
        pull: str | None = None,
        sha256: str | None = None,
    ) -> "Options":
        from deployer import api  # noqa: PLC0415 - imported when a task runs, not at start-up

        return api.options(
            version=version,
            commit=commit,
            signature=signature,
            pull=pull or "",
            sha256=sha256 or "",
            accept_new_host_keys=self.accept_new_host_keys,
            parallel=self.parallel or None,
            dry_run=dry_run,
            force=force,
            unpin=unpin,
            lock_wait=seconds(self.lock_wait, "--lock-wait"),
            message=self.message or "",
            hosts=_names(self.hosts),
            groups=_names(self.group),
        )

    def run(self, task_name: str, action: Callable[[], int]) -> None:
        """Run the task's action with logging set up (-v, the run log) and user errors mapped to exit codes."""

        def checked() -> int:
            if self.config_problem:
                raise InputError(self.config_problem)
            return action()

        cli.guarded(checked, task_name, self.verbose, self.json, settled_exit=True)


def configured_inventory(c: Context) -> tuple[str | None, str | None]:
    """`deployer.inventory` from invoke's configuration (the project's invoke.yaml, ~/.invoke.yaml, ...),
    or what is wrong with it (reported when the task runs, as every input error is)."""
    try:
        value = c.config["deployer"]["inventory"]
    except (KeyError, TypeError, AttributeError):
        return None, None
    if value is not None and not isinstance(value, str):
        return None, f"deployer.inventory in invoke's configuration must be a file name, got {value!r}"
    project = getattr(c.config, "_project_prefix", None)  # the folder of the project's invoke.yaml
    if value and project and not os.path.isabs(value):
        value = os.path.join(project, value)
    return value or None, None


def seconds(value: str | None, flag: str) -> float:
    """A number of seconds from the command line; a bad value ends the run with a clear error (exit 2)."""
    if value in (None, ""):
        return 0.0
    try:
        number = float(str(value))
    except ValueError:
        number = -1.0
    if not 0 <= number <= 86400:
        raise InputError(f"{flag} expects seconds between 0 and 86400, got {value!r}")
    return number


def _names(value: str | None) -> tuple[str, ...]:
    return tuple(name.strip() for name in (value or "").split(",") if name.strip())


def fleet_task(
    name: str | None = None, help: dict[str, str] | None = None, locking: bool = False
) -> Callable[[Callable[..., None]], Any]:
    """An invoke task `body(c, common, <own options>)` that also takes the shared options.

    invoke reads a task's options from its signature, so the shared ones are added to the
    signature here and collected into `Common` when the task runs.
    """
    trailing = {**(LOCK_DEFAULTS if locking else {}), **TRAILING_DEFAULTS}
    shared = {**LEADING_DEFAULTS, **trailing}

    def parameters(defaults: dict[str, Any]) -> list[inspect.Parameter]:
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        return [inspect.Parameter(key, kind, default=default) for key, default in defaults.items()]

    def decorate(body: Callable[..., None]) -> Any:
        context, _common, *own = inspect.signature(body).parameters.values()

        @functools.wraps(body)
        def run(c: Context, *args: Any, **kwargs: Any) -> None:
            common = Common(**{key: kwargs.pop(key, default) for key, default in shared.items()})
            configured, problem = configured_inventory(c)
            chosen = named_inventory(common.inventory, configured)
            common = dataclasses.replace(common, inventory=chosen, config_problem=problem)
            body(c, common, *args, **kwargs)

        signature = [context, *parameters(LEADING_DEFAULTS), *own, *parameters(trailing)]
        run.__signature__ = inspect.Signature(signature)  # type: ignore[attr-defined]
        helps = {**COMMON_HELP, **(LOCK_HELP if locking else {}), **(help or {})}
        return task(run, name=name or body.__name__.replace("_", "-"), help=helps)

    return decorate


@fleet_task(
    locking=True,
    help={
        "artifact": ".tar.gz (or folder) whose contents become the release",
        "release": "release id (default: UTC time + artifact digest)",
        "dry-run": "show the plan (what switches, what is pruned), change nothing",
        "force": "converge a split fleet on this release; deploy despite the schema check",
        "unpin": "remove the pin a rollback left (the fix is ready)",
        "version": "the release's version label (default: release.yml, then git describe, then the CI tag)",
        "commit": "the full git commit it was built from (default: release.yml, then git, then the CI's)",
        "git": "deploy this commit, branch or tag: the artifact is `git archive` of it (instead of --artifact)",
        "repo": "the git repository for --git (default: the current folder)",
        "signature": "the artifact's signature (default: ARTIFACT.sig beside it); checked when the inventory "
        "has `signatures`",
        "pull": "hosts fetch the artifact from this http(s) URL themselves (curl or wget) instead of an upload",
        "sha256": "the digest of an artifact given as a URL (--artifact https://...), checked by every host",
    },
)
def deploy(
    c: Context,
    common: Common,
    artifact: str | None = None,
    release: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    unpin: bool = False,
    version: str | None = None,
    commit: str | None = None,
    git: str | None = None,
    repo: str | None = None,
    signature: str | None = None,
    pull: str | None = None,
    sha256: str | None = None,
) -> None:
    """Stage a release on every host, validate it, then switch `current` atomically (in batches) and verify."""
    chosen = dict(version=version, commit=commit, signature=signature, pull=pull, sha256=sha256)
    common.run(
        "deploy",
        lambda: cli.deploy(
            common.inventory,
            artifact,
            release,
            common.options(dry_run, force=force, unpin=unpin, **chosen),
            common.json,
            git,
            repo,
        ),
    )


@fleet_task(
    locking=True,
    help={
        "to": "release id to roll back to (default: the fleet's previous release that is not marked bad)",
        "dry-run": "show the plan, change nothing",
        "force": "roll back even though the target cannot run against the recorded database schema",
    },
)
def rollback(c: Context, common: Common, to: str | None = None, dry_run: bool = False, force: bool = False) -> None:
    """Point `current` back to the previous release on every host in parallel, verify, pin, mark bad."""
    common.run(
        "rollback", lambda: cli.rollback(common.inventory, to, common.options(dry_run, force=force), common.json)
    )


@fleet_task(
    locking=True,
    help={
        "artifact": "the new version to drill with",
        "junit": "also write a JUnit XML report (one test case per phase and host) to this file",
        "verify": "run the testinfra checks (inv verify) after each phase (default on; --no-verify to skip)",
        "git": "drill with this commit, branch or tag (`git archive` of it) instead of --artifact",
        "repo": "the git repository for --git (default: the current folder)",
        "version": "the new release's version label (as for deploy)",
        "commit": "the full git commit it was built from (as for deploy)",
        "signature": "the artifact's signature (as for deploy)",
        "pull": "hosts fetch the artifact from this URL (as for deploy)",
        "sha256": "the digest of an artifact given as a URL (as for deploy)",
    },
)
def rollback_drill(
    c: Context,
    common: Common,
    artifact: str | None = None,
    junit: str | None = None,
    verify: bool = True,
    git: str | None = None,
    repo: str | None = None,
    version: str | None = None,
    commit: str | None = None,
    signature: str | None = None,
    pull: str | None = None,
    sha256: str | None = None,
) -> None:
    """Deploy the artifact, roll back, deploy again, verifying each step (integration fleets)."""
    common.run(
        "rollback-drill",
        lambda: cli.drill(
            common.inventory,
            artifact,
            common.options(version=version, commit=commit, signature=signature, pull=pull, sha256=sha256),
            common.json,
            junit,
            verify,
            git,
            repo,
        ),
    )


@fleet_task()
def status(c: Context, common: Common) -> None:
    """Each host's current and previous release and problems; the fleet's split, pin, lock and schema."""
    common.run("status", lambda: cli.status(common.inventory, common.options(), common.json))


@fleet_task(help={"limit": "events to show (newest first)"})
def history(c: Context, common: Common, limit: int = 20) -> None:
    """The fleet's deploys, rollbacks, reverts, hook and health failures, newest first."""
    common.run("history", lambda: cli.history(common.inventory, int(limit), common.options(), common.json))


@fleet_task()
def releases(c: Context, common: Common) -> None:
    """Per release: hosts that have it, current, previous, bad, failed, pinned."""
    common.run("releases", lambda: cli.releases(common.inventory, common.options(), common.json))


@fleet_task()
def lock_status(c: Context, common: Common) -> None:
    """Who holds the fleet lock, and whether it was left by a run that is gone (exit 1 when locked)."""
    common.run("lock-status", lambda: cli.lock_status(common.inventory, common.options(), common.json))


@fleet_task(help={"yes": "do not ask for confirmation (scripts)"})
def unlock(c: Context, common: Common, yes: bool = False) -> None:
    """Remove a fleet lock left by a killed run, after confirmation."""
    common.run("unlock", lambda: cli.unlock(common.inventory, yes, common.options(), common.json))


@fleet_task(locking=True)
def unpin(c: Context, common: Common) -> None:
    """Allow deploys again after a rollback pinned the fleet."""
    common.run("unpin", lambda: cli.unpin(common.inventory, common.options(), common.json))


@fleet_task(locking=True, help={"dry-run": "show which hosts would change, change nothing"})
def place_signers(c: Context, common: Common, dry_run: bool = False) -> None:
    """Give every host the inventory's allowed signers (after a key rotation or revocation)."""
    common.run("place-signers", lambda: cli.place_signers(common.inventory, common.options(dry_run), common.json))


@fleet_task(locking=True, help={"dry-run": "show what would be removed, change nothing"})
def prune(c: Context, common: Common, dry_run: bool = False) -> None:
    """Remove releases beyond keep_releases (never current, previous, pinned, or in use anywhere)."""
    common.run("prune", lambda: cli.prune(common.inventory, common.options(dry_run), common.json))


@fleet_task(
    help={
        "release": "the release every host must be on: id, version or commit prefix (default: the fleet's)",
        "junit": "also write the checks' JUnit XML to this file",
    }
)
def verify(c: Context, common: Common, release: str | None = None, junit: str | None = None) -> None:
    """Check every host over OpenSSH (testinfra): current, previousVersion, lock, shared paths, health."""
    common.run("verify", lambda: cli.verify(common.inventory, release, junit, common.options(), common.json))


@fleet_task()
def check(c: Context, common: Common) -> None:
    """Check the inventory and every host, read only: key, login, deploy_to writable, tools, free disk."""
    common.run("check", lambda: cli.check(common.inventory, common.options(), common.json))


@task(
    help={
        "hosts": "hosts as [name=][user@]address[:port], comma-separated (or @FILE, one per line)",
        "ssh-config": "an OpenSSH client config: its Host entries become the hosts",
        "ansible": "an Ansible inventory (INI or YAML): its hosts and groups",
        "out": "the inventory to write (its known_hosts goes beside it: deploy.known_hosts)",
        "user": "the SSH user deploys run as (default: the source's, else deploy)",
        "deploy-to": "the app's folder on every host",
        "identity-file": "the SSH key to log in with (default: the source's, else ~/.ssh/id_ed25519)",
        "accept-fingerprints": "a file of the hosts' SHA256 fingerprints to accept without asking (CI)",
        "force": "replace an existing inventory and known_hosts",
        "json": COMMON_HELP["json"],
    },
)
def init(
    c: Context,
    hosts: str | None = None,
    ssh_config: str | None = None,
    ansible: str | None = None,
    out: str = "deploy.yml",
    user: str | None = None,
    deploy_to: str = "/srv/app",
    identity_file: str | None = None,
    accept_fingerprints: str | None = None,
    force: bool = False,
    json: bool = False,
) -> None:
    """Write a first inventory + known_hosts from a host list, an ssh_config or an Ansible inventory."""
    cli.guarded(
        lambda: cli.init(
            hosts, ssh_config, ansible, out, user, deploy_to, identity_file, accept_fingerprints, force, json
        ),
        "init",
        as_json=json,
        settled_exit=True,
    )


@task(
    positional=["artifact"],
    help={
        "artifact": "the .tar.gz to sign (with --git: where the built release is written)",
        "key": "the signing key: a private key file, or the .pub of a key held by ssh-agent",
        "namespace": "the signature's namespace (as the inventory's signatures.namespace)",
        "out": "where the signature goes (default: ARTIFACT.sig)",
        "git": "build this commit, branch or tag (as deploy --git does, byte for byte) into ARTIFACT, then sign it",
        "repo": "the git repository for --git (default: here)",
        "json": COMMON_HELP["json"],
    },
)
def sign(
    c: Context,
    artifact: str,
    key: str,
    namespace: str = "deployer-release",
    out: str | None = None,
    git: str | None = None,
    repo: str | None = None,
    json: bool = False,
) -> None:
    """Sign a release artifact with ssh-keygen -Y sign (a detached ARTIFACT.sig; the key never leaves here)."""
    cli.guarded(
        lambda: cli.sign(artifact, key, namespace, out, json, git, repo), "sign", as_json=json, settled_exit=True
    )


@task(
    positional=["path"],
    help={
        "path": "a run's JSON report (--json output, or one kept in .deployer-runs/), or `latest`: the newest kept",
        "html": "the HTML page to write (default: beside the report, .html)",
        "json": COMMON_HELP["json"],
    },
)
def report(c: Context, path: str, html: str | None = None, json: bool = False) -> None:
    """Write a run's report as one self-contained HTML page: verdict, hosts, timeline chart."""
    cli.guarded(lambda: cli.report_page(path, html, json), "report", as_json=json, settled_exit=True)


@task(
    name="fleet-up",
    help={
        "hosts": "number of hosts",
        "state-dir": "where keys, hosts and inventory live (default: ./.fleet)",
        "subnet": "127.X.Y prefix of the host addresses",
        "port": "sshd port on each host",
        "userland": "gnu (default), busybox, posix-strict, tcsh, fish, a comma list given to hosts in turn, "
        "or mixed (gnu,busybox,posix-strict,tcsh)",
        "json": COMMON_HELP["json"],
    },
)
def fleet_up(
    c: Context,
    hosts: int = 3,
    state_dir: str | None = None,
    subnet: str = "127.0.1",
    port: int = 2222,
    userland: str = "gnu",
    json: bool = False,
) -> None:
    """Start a local fleet of real sshd hosts (root; installs openssh-server if missing)."""
    cli.guarded(
        lambda: cli.fleet_up(hosts, state_dir, subnet, port, userland, json),
        "fleet-up",
        as_json=json,
        settled_exit=True,
    )


@task(name="fleet-down", help={"state-dir": "the fleet's folder (default: ./.fleet)", "json": COMMON_HELP["json"]})
def fleet_down(c: Context, state_dir: str | None = None, json: bool = False) -> None:
    """Stop the local fleet's hosts (only the processes it started)."""
    cli.guarded(lambda: cli.fleet_down(state_dir, json), "fleet-down", as_json=json, settled_exit=True)


@task(
    name="vagrant-inventory",
    help={
        "ssh-config": "saved `vagrant ssh-config` output (default: run it in vagrant/)",
        "out": "inventory to write (its known_hosts goes next to it)",
        "json": COMMON_HELP["json"],
    },
)
def vagrant_inventory(
    c: Context, ssh_config: str | None = None, out: str = "inventories/vagrant.yml", json: bool = False
) -> None:
    """Write an inventory (and known_hosts, by ssh-keyscan) for the Vagrant fleet in vagrant/."""
    cli.guarded(
        lambda: cli.vagrant_inventory(ssh_config, out, json), "vagrant-inventory", as_json=json, settled_exit=True
    )


@task(
    name="vm-fleet-up",
    help={
        "vms": "how many VMs (web1..webN, 1-9)",
        "memory": "MB of memory per VM",
        "out": "inventory to write (its known_hosts goes next to it)",
        "json": COMMON_HELP["json"],
    },
)
def vm_fleet_up(
    c: Context, vms: int = 3, memory: int = 512, out: str = "inventories/vagrant.yml", json: bool = False
) -> None:
    """Bring the Vagrant VM fleet of vagrant/ up on libvirt (root; builds the box and starts libvirt if needed)."""
    cli.guarded(lambda: cli.vm_fleet_up(vms, memory, out, json), "vm-fleet-up", as_json=json, settled_exit=True)


@task(name="vm-fleet-down", help={"json": COMMON_HELP["json"]})
def vm_fleet_down(c: Context, json: bool = False) -> None:
    """Destroy the VM fleet and stop the libvirt daemons vm-fleet-up started (by pid)."""
    cli.guarded(lambda: cli.vm_fleet_down(json), "vm-fleet-down", as_json=json, settled_exit=True)


@task(
    name="build-sample",
    help={"version": "text for the VERSION file", "out": "output .tar.gz", "json": COMMON_HELP["json"]},
)
def build_sample(c: Context, version: str = "v1", out: str = "dist/app.tar.gz", json: bool = False) -> None:
    """Pack the sample app (shipped with deployer) with the given VERSION."""
    cli.guarded(lambda: cli.print_built_sample(version, out, json), "build-sample", as_json=json, settled_exit=True)


@task
def demo(c: Context) -> None:
    """The main job on a 3-host local fleet: deploy v1, v2, rollback (pin), unpin, drill, history, status."""
    cli.guarded(cli.demo)  # several operations in one process: Ctrl-C stays live between them


def collection(name: str | None = None) -> Collection:
    """The operator tasks (deploy, rollback, rollback-drill, verify, status, ...) as an invoke collection
    for a project's own tasks.py: `ns.add_collection(deployer.tasks.collection(), name="app")` gives
    `inv app.deploy`; the inventory comes from `deployer.inventory` in the project's invoke.yaml."""
    operator_tasks = [
        deploy,
        rollback,
        rollback_drill,
        verify,
        status,
        history,
        releases,
        lock_status,
        unlock,
        unpin,
        prune,
        place_signers,
        check,
        init,
        report,
    ]
    return Collection(name, *operator_tasks) if name else Collection(*operator_tasks)
