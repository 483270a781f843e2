"""Every command and flag, defined once: `deployer` (deployer/console.py) and `inv` (deployer/tasks.py)
are two front ends built from this table, and `values()` turns what either parsed into checked values.

A flag means one thing in every command that takes it; short flags are chosen by hand, for the few
used daily, and never mean two things. Nothing here imports paramiko or fabric: `--help` stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deployer.arguments import Flag, Values, checked


@dataclass(frozen=True)
class Command:
    """One command: its flags by name (their meaning comes from FLAGS), its group in `--help`, examples."""

    name: str
    group: str
    summary: str
    examples: tuple[str, ...]
    flags: tuple[str, ...] = ()
    fleet: bool = False  # takes the fleet flags (inventory, hosts, group, parallel, ...)
    locking: bool = False  # changes the fleet: also --lock-wait and --message
    positional: tuple[str, ...] = ()
    json: bool = True

    def spellings(self, short: bool = True) -> list[str]:
        """How its flags may be typed (positionals aside): `--help`, each `--flag`, `--no-flag` for a switch
        that is on by default, and with `short` the short flags (`-h`, `-i`, ...)."""
        spelled = ["-h", "--help"] if short else ["--help"]
        for name in self.flag_names():
            flag = FLAGS[name]
            if name in self.positional:
                continue
            spelled.append(f"--{flag.name}")
            if short and flag.short:
                spelled.append(f"-{flag.short}")
            if flag.kind == "switch" and flag.default is True:
                spelled.append(f"--no-{flag.name}")
        return spelled

    def flag_names(self) -> tuple[str, ...]:
        shared = FLEET_FLAGS if self.fleet else ()
        locking = LOCK_FLAGS if self.locking else ()
        output = ("json",) if self.json and not self.fleet else ()
        return (*self.positional, *self.flags, *shared, *locking, *output)


FLAG_LIST = (
    # the fleet flags: every command that reads or changes a fleet takes them
    Flag(
        "inventory",
        "the inventory YAML (default: $DEPLOYER_INVENTORY, deployer.inventory in invoke.yaml, "
        "./deploy.yml, the one file in ./inventories/)",
        metavar="FILE",
        short="i",
    ),
    Flag(
        "hosts",
        "the hosts this is about: names of the inventory's hosts, comma-separated (init: the hosts "
        "to write, as [name=][user@]address[:port], or @FILE), e.g. web1,web2",
        metavar="LIST",
    ),
    Flag("group", "only the members of these inventory groups, comma-separated, e.g. canary", metavar="NAMES"),
    Flag(
        "parallel",
        "hosts worked on at once (default: the inventory's parallel, else 32)",
        kind="count",
        metavar="N",
        low=1,
        high=10000,
    ),
    Flag(
        "accept-new-host-keys",
        "add unknown host keys to known_hosts (a changed key is still refused)",
        kind="switch",
        default=False,
    ),
    Flag("json", "print one JSON document on stdout (progress stays on stderr)", kind="switch", default=False),
    Flag(
        "verbose",
        "also show debug lines on stderr: connections, each remote step's exit and time",
        kind="switch",
        default=False,
        short="v",
    ),
    Flag(
        "lock-wait",
        "wait up to this many seconds for another operation's lock (default: refuse at once)",
        kind="seconds",
        metavar="SECONDS",
    ),
    Flag(
        "message",
        'why: recorded in the lock, the history, the pin and bad marks, e.g. "v2 breaks checkout"',
        metavar="TEXT",
        short="m",
    ),
    # what a release is
    Flag(
        "artifact",
        "the .tar.gz (or folder) whose contents become the release; with --sha256, an http(s) URL",
        metavar="PATH",
        short="a",
    ),
    Flag(
        "git", "build the artifact from this commit, branch or tag (`git archive`) instead of --artifact", metavar="REF"
    ),
    Flag("repo", "the git repository for --git (default: the current folder)", metavar="PATH"),
    Flag(
        "release",
        "the release: its id (deploy: the id to give it; default: UTC time + artifact digest), "
        "or a version or commit prefix where one is looked up",
        metavar="ID",
    ),
    Flag(
        "version",
        "the release's version label (default: release.yml, then git describe, then the CI tag), e.g. v1.4.2",
        metavar="LABEL",
    ),
    Flag(
        "commit", "the full git commit it was built from (default: release.yml, then git, then the CI's)", metavar="SHA"
    ),
    Flag(
        "signature",
        "the artifact's signature (default: ARTIFACT.sig beside it), checked when the inventory has `signatures`",
        metavar="FILE",
    ),
    Flag(
        "pull",
        "hosts fetch the artifact from this http(s) URL themselves (curl or wget) instead of an upload",
        metavar="URL",
    ),
    Flag("sha256", "the sha256 of an artifact given as a URL, checked by every host", metavar="HEX"),
    # how an operation behaves
    Flag("dry-run", "show the plan and change nothing", kind="switch", default=False, short="n"),
    Flag(
        "force",
        "go ahead despite a refusal that can be overridden (deploy: a split fleet or the schema "
        "check; rollback: the schema check; init: existing files)",
        kind="switch",
        default=False,
    ),
    Flag("unpin", "remove the pin a rollback left and deploy (the fix is ready)", kind="switch", default=False),
    Flag(
        "watch",
        "watch the release after the switch as the inventory's `watch` says (--no-watch: skip it this once)",
        kind="switch",
        default=True,
    ),
    Flag(
        "duration",
        "seconds to watch (default: the inventory's watch.duration)",
        kind="count",
        metavar="SECONDS",
        low=1,
        high=86400,
    ),
    Flag(
        "to",
        "the release to roll back to: a release id, version or commit prefix (default: the fleet's "
        "previous release not marked bad)",
        metavar="NAME",
    ),
    Flag("verify", "run `verify`'s checks after each phase (--no-verify: skip them)", kind="switch", default=True),
    Flag("junit", "also write a JUnit XML report to this file (CI)", metavar="FILE"),
    Flag(
        "limit",
        "entries to show, newest first (a drill is one entry)",
        kind="count",
        metavar="N",
        default=20,
        low=1,
        high=100000,
    ),
    Flag("yes", "do not ask for confirmation (scripts)", kind="switch", default=False, short="y"),
    Flag("out", "the file to write", metavar="FILE", short="o"),
    Flag(
        "path", "a run's JSON report (a --json output, or one kept in .deployer-runs/), or `latest`", metavar="REPORT"
    ),
    # init, sign
    Flag("ssh-config", "an OpenSSH client config whose Host entries are the hosts", metavar="FILE"),
    Flag("ansible", "an Ansible inventory (INI or YAML): its hosts and groups", metavar="FILE"),
    Flag("user", "the SSH user deploys run as (default: the source's, else deploy)", metavar="NAME"),
    Flag("deploy-to", "the app's folder on every host", metavar="PATH", default="/srv/app"),
    Flag("identity-file", "the SSH key to log in with (default: the source's, else ~/.ssh/id_ed25519)", metavar="FILE"),
    Flag(
        "accept-fingerprints",
        "a file of the hosts' SHA256 fingerprints (as `ssh-keygen -lf` prints them) to accept without asking (CI)",
        metavar="FILE",
    ),
    Flag("key", "the signing key: a private key file, or the .pub of a key held by ssh-agent", metavar="FILE"),
    Flag(
        "namespace",
        "the signature's namespace (as the inventory's signatures.namespace)",
        metavar="NS",
        default="deployer-release",
    ),
    Flag("shell", "the shell to complete for: bash or zsh", metavar="SHELL"),
    # the local fleets
    Flag("count", "how many hosts (local fleet: 1-250) or VMs (1-9)", kind="count", metavar="N", low=1, high=250),
    Flag("state-dir", "the local fleet's folder: keys, hosts, inventory (default: ./.fleet)", metavar="PATH"),
    Flag("subnet", "the 127.X.Y prefix of the local hosts' addresses", metavar="PREFIX", default="127.0.1"),
    Flag("port", "sshd's port on each local host", kind="count", metavar="PORT", default=2222, low=1, high=65535),
    Flag(
        "userland",
        "gnu (default), busybox, posix-strict, tcsh, fish, a comma list given to hosts in turn, or mixed",
        metavar="NAMES",
        default="gnu",
    ),
    Flag(
        "broken",
        "a release whose /health passes while every other request fails (to try the watch)",
        kind="switch",
        default=False,
    ),
    Flag("memory", "MB of memory per VM", kind="count", metavar="MB", default=512, low=128, high=65536),
)
FLAGS: dict[str, Flag] = {flag.name: flag for flag in FLAG_LIST}
FLEET_FLAGS = ("inventory", "hosts", "group", "parallel", "accept-new-host-keys", "json", "verbose")
LOCK_FLAGS = ("lock-wait", "message")
OUTPUT_FLAGS = ("json", "verbose")
RELEASE_FLAGS = ("artifact", "git", "repo", "version", "commit", "signature", "pull", "sha256")

GROUPS = (
    ("ship", "Ship and undo"),
    ("look", "Look at a fleet"),
    ("admin", "Set up and administer"),
    ("local", "Fleets to try it on (local sshd hosts, Vagrant VMs)"),
)

COMMAND_LIST = (
    Command(
        "deploy",
        "ship",
        "Stage a release on every host, validate it, switch `current` (in batches), verify.",
        ("deploy -a dist/app.tar.gz", "deploy --git v1.4.2 -m 'checkout fix'", "deploy -a dist/app.tar.gz -n"),
        ("release", *RELEASE_FLAGS, "dry-run", "force", "unpin", "watch"),
        fleet=True,
        locking=True,
    ),
    Command(
        "rollback",
        "ship",
        "Switch every host back to the previous good release, verify, pin, mark bad.",
        ("rollback -m 'v2 breaks checkout'", "rollback --to v1.4.1", "rollback -n"),
        ("to", "dry-run", "force"),
        fleet=True,
        locking=True,
    ),
    Command(
        "watch",
        "ship",
        "Watch the live release with the inventory's checks; roll it back by itself if they fail.",
        ("watch", "watch --duration 900 -m 'watch the evening peak'"),
        ("duration",),
        fleet=True,
        locking=True,
    ),
    Command(
        "rollback-drill",
        "ship",
        "Deploy, roll back, deploy again, verifying each step (integration fleets).",
        ("rollback-drill -a dist/app.tar.gz --junit drill.xml", "rollback-drill --git HEAD --no-verify"),
        (*RELEASE_FLAGS, "junit", "verify"),
        fleet=True,
        locking=True,
    ),
    Command(
        "status",
        "look",
        "Each host's current and previous release and problems; split, pin, lock, schema.",
        ("status", "status --group canary --json"),
        fleet=True,
    ),
    Command(
        "history",
        "look",
        "The fleet's deploys, rollbacks, reverts and failures, newest first.",
        ("history", "history --limit 5 --json"),
        ("limit",),
        fleet=True,
    ),
    Command(
        "releases",
        "look",
        "Per release: version, commit, hosts that have it; current, previous, bad, pinned.",
        ("releases",),
        fleet=True,
    ),
    Command(
        "check",
        "look",
        "Read every host, change nothing: key, login, deploy_to writable, tools, free disk.",
        ("check", "check -i deploy/prod.yml --json"),
        fleet=True,
    ),
    Command(
        "report",
        "look",
        "Write a run's report as one HTML page: verdict, hosts, timeline chart.",
        ("report latest", "report .deployer-runs/RUN.json -o run.html"),
        ("out",),
        positional=("path",),
    ),
    Command(
        "lock-status",
        "look",
        "Who holds the fleet lock, and whether its run is gone (exit 1 when locked).",
        ("lock-status",),
        fleet=True,
    ),
    Command(
        "init",
        "admin",
        "Write a first inventory and known_hosts; every host key is shown to confirm.",
        (
            "init --hosts web1=10.0.0.1,web2=10.0.0.2:2222 --deploy-to /srv/shop",
            "init --ansible hosts.ini --accept-fingerprints fingerprints.txt",
        ),
        ("hosts", "ssh-config", "ansible", "out", "user", "deploy-to", "identity-file", "accept-fingerprints", "force"),
    ),
    Command(
        "verify",
        "admin",
        "Check every host over OpenSSH (testinfra): current, previousVersion, lock, health.",
        ("verify", "verify --release v1.4.2 --junit verify.xml"),
        ("release", "junit"),
        fleet=True,
    ),
    Command(
        "unpin",
        "admin",
        "Allow deploys again after a rollback pinned the fleet.",
        ("unpin -m 'fix shipped in v1.4.3'",),
        locking=True,
        fleet=True,
    ),
    Command(
        "unlock",
        "admin",
        "Remove a fleet lock left by a killed run, after confirmation.",
        ("unlock", "unlock --yes"),
        ("yes",),
        fleet=True,
    ),
    Command(
        "prune",
        "admin",
        "Remove releases beyond keep_releases (never current, previous, pinned or in use).",
        ("prune -n", "prune"),
        ("dry-run",),
        locking=True,
        fleet=True,
    ),
    Command(
        "place-signers",
        "admin",
        "Give every host the inventory's allowed signers and revoked keys.",
        ("place-signers -n", "place-signers"),
        ("dry-run",),
        locking=True,
        fleet=True,
    ),
    Command(
        "sign",
        "admin",
        "Sign a release artifact (ssh-keygen -Y sign): a detached ARTIFACT.sig.",
        ("sign dist/app.tar.gz --key ~/.ssh/release_key", "sign dist/app.tar.gz --key k --git v1.4.2"),
        ("key", "namespace", "out", "git", "repo"),
        positional=("artifact",),
    ),
    Command(
        "completion",
        "admin",
        "Print the shell completion script for bash or zsh.",
        ("completion bash > /etc/bash_completion.d/deployer", "completion zsh > ~/.zfunc/_deployer"),
        positional=("shell",),
        json=False,
    ),
    Command(
        "demo",
        "local",
        "The main job on a 3-host local fleet: deploy, rollback, pin, drill, history.",
        ("demo",),
        json=False,
    ),
    Command(
        "fleet-up",
        "local",
        "Start a local fleet of real sshd hosts (root; in ./.fleet).",
        ("fleet-up", "fleet-up --count 5 --userland mixed"),
        ("count", "state-dir", "subnet", "port", "userland"),
    ),
    Command(
        "fleet-down",
        "local",
        "Stop the local fleet's hosts (only the processes it started).",
        ("fleet-down",),
        ("state-dir",),
    ),
    Command(
        "build-sample",
        "local",
        "Pack the sample app (shipped with deployer) with a VERSION.",
        ("build-sample --version v2 -o dist/app-v2.tar.gz", "build-sample --version v3 --broken -o dist/app-v3.tar.gz"),
        ("version", "out", "broken"),
    ),
    Command(
        "vm-fleet-up",
        "local",
        "Bring the Vagrant VM fleet of vagrant/ up on libvirt (root, a checkout).",
        ("vm-fleet-up --count 2",),
        ("count", "memory", "out"),
    ),
    Command(
        "vm-fleet-down",
        "local",
        "Destroy the VM fleet; stop the libvirt daemons vm-fleet-up started.",
        ("vm-fleet-down",),
    ),
    Command(
        "vagrant-inventory",
        "local",
        "Write the inventory and known_hosts for the Vagrant fleet in vagrant/.",
        ("vagrant-inventory",),
        ("ssh-config", "out"),
    ),
)
COMMANDS: dict[str, Command] = {command.name: command for command in COMMAND_LIST}
# Per-command defaults where the flag's meaning is the same but its usual value differs.
DEFAULTS: dict[tuple[str, str], Any] = {
    ("fleet-up", "count"): 3,
    ("vm-fleet-up", "count"): 3,
    ("vm-fleet-up", "out"): "inventories/vagrant.yml",
    ("vagrant-inventory", "out"): "inventories/vagrant.yml",
    ("init", "out"): "deploy.yml",
    ("build-sample", "version"): "v1",
    ("build-sample", "out"): "dist/app.tar.gz",
}


def default(command: str, flag: str) -> Any:
    return DEFAULTS.get((command, flag), FLAGS[flag].default)


def values(command: str, raw: Mapping[str, Any]) -> Values:
    """Check what a front end parsed (text as typed, switches as bools) against the table: numbers are
    numbers in range, names are lists; a bad value is an ArgumentProblem naming the flag and what it expects."""
    spec = COMMANDS[command]
    given: dict[str, Any] = {}
    for name in spec.flag_names():
        flag = FLAGS[name]
        given[flag.attr] = checked(flag, raw.get(flag.attr), default(command, name))
    return Values(command, given)
