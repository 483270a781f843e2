"""The inventory as data: hosts, how to reach them, where to deploy, and the run's settings.

Built by `deployer.inventory.load` after every value was checked; frozen, so nothing changes it later.
"""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from deployer.errors import InputError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$", re.IGNORECASE)
ADDRESS_RE = re.compile(r"^[A-Za-z0-9._:-]{1,253}$")

DEFAULT_PARALLEL = 32
DEFAULT_KEEP_RELEASES = 5
DEFAULT_KEEP_FAILED_RELEASES = 3
BATCH_PERCENT_RE = re.compile(r"^([0-9]{1,3})%$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
REMOTE_HOOKS = ("before_switch", "after_switch", "after_rollback")
LOCAL_HOOKS = ("after_deploy_local", "after_rollback_local")


@dataclass(frozen=True)
class Timeouts:
    """Seconds allowed for each kind of wait; paramiko's own defaults (an hour) are never used."""

    connect: float = 10.0
    command: float = 60.0
    stage: float = 900.0
    hook: float = 60.0
    migrate: float = 600.0
    validate: float = 900.0
    fetch_wait: float = 3600.0  # a pull deploy's wait for a fetch slot (fetch_parallel); not part of `stage`


@dataclass(frozen=True)
class EnvVar:
    """One variable for validate, hooks, health checks and migrations; secret ones are never shown."""

    name: str
    value: str = field(repr=False)
    secret: bool = False


@dataclass(frozen=True)
class HealthCheck:
    """A command run on each host after its switch; passes when it exits 0 within `timeout`."""

    command: str
    timeout: float = 10.0
    retries: int = 3
    interval: float = 2.0
    # What the output must name, so a server still running the old code fails the check:
    # "release" (the id switched to), "version" or "commit" (as recorded with it); "" for none.
    expect: str = ""

    @property
    def worst_case_seconds(self) -> float:
        return (self.retries + 1) * (self.timeout + 5) + self.retries * self.interval


@dataclass(frozen=True)
class Rollout:
    """How a deploy switches: `batch` hosts (or `percent` of the fleet) at a time, `pause` seconds apart."""

    batch: int = 0  # 0: all hosts at once
    percent: int = 0
    pause: float = 0.0

    def batch_size(self, hosts: int) -> int:
        if self.percent:
            return max(1, -(-hosts * self.percent // 100))
        return min(self.batch, hosts) if self.batch else hosts


# What a host's copy of the allowed signers may weigh: it travels inside the staging session's
# command line (at most once per host), which has to stay well under Linux's 128 KiB per argument.
MAX_ALLOWED_SIGNERS = 16 * 1024
MAX_REVOKED = 4 * 1024


@dataclass(frozen=True)
class Signatures:
    """Inventory `signatures`: who may sign releases (an ssh-keygen allowed_signers file), in which
    namespace, whether an unsigned artifact is refused, and the revoked keys."""

    allowed_signers: str
    namespace: str = "deployer-release"
    require: bool = False
    revoked: str = ""


@dataclass(frozen=True)
class Gateway:
    """A bastion the host is reached through (inventory `gateway`, or ProxyJump in an ssh_config)."""

    address: str
    port: int = 22
    user: str = ""
    identity_file: str = ""  # "" means the inventory's ssh.identity_file (ProxyJump aliases may name their own)

    def __str__(self) -> str:
        return f"{self.user}@{self.address}:{self.port}" if self.user else f"{self.address}:{self.port}"


@dataclass(frozen=True)
class Host:
    """One host, with every setting resolved: its own, else its group's, else its ssh_config's, else the inventory's."""

    name: str
    address: str
    port: int = 22
    user: str = ""
    groups: tuple[str, ...] = ()
    deploy_to: str = ""  # "" means the inventory's deploy_to
    identity_file: str = ""  # "" means the inventory's ssh.identity_file
    gateway: Gateway | None = None
    sudo: bool = False  # run this host's hooks with sudo (as root)
    signatures: Signatures | None = None  # its own or its group's `signatures`; None: the inventory's


@dataclass(frozen=True)
class Inventory:
    path: str
    deploy_to: str
    user: str
    identity_file: str
    known_hosts: str
    hosts: tuple[Host, ...]
    validate: str = ""
    parallel: int = DEFAULT_PARALLEL
    fetch_parallel: int = 0  # pull deploys: at most this many hosts fetch the artifact at once (0: no cap)
    timeouts: Timeouts = field(default_factory=Timeouts)
    health_check: HealthCheck | None = None
    rollout: Rollout = field(default_factory=Rollout)
    keep_releases: int = DEFAULT_KEEP_RELEASES
    keep_failed_releases: int = DEFAULT_KEEP_FAILED_RELEASES
    shared: tuple[str, ...] = ()
    hooks: Mapping[str, str] = field(default_factory=dict)
    migrate: str = ""
    rollback_migrations: str = ""
    env: tuple[EnvVar, ...] = ()
    passphrase: str = field(default="", repr=False)  # for an encrypted identity file; from ssh.passphrase_env
    sudo_password: str = field(default="", repr=False)  # filled in by the CLI: from sudo_password_env or asked once
    sudo_password_source: str = ""  # "" (passwordless sudo -n) | "ask" | "env:NAME"
    signatures: Signatures | None = None
    watch: Watch | None = None  # what is watched after a switch, and what a failure means

    def deploy_to_of(self, host: Host) -> str:
        """Where `host` deploys: its own or its group's deploy_to, else the inventory's."""
        return host.deploy_to or self.deploy_to

    def signatures_of(self, host: Host) -> Signatures | None:
        """Who may sign what `host` runs: its own or its group's `signatures`, else the inventory's."""
        return host.signatures or self.signatures

    def signature_settings(self) -> tuple[Signatures, ...]:
        """Every distinct `signatures` the hosts follow, in host order (an artifact must satisfy each)."""
        found = [settings for host in self.hosts if (settings := self.signatures_of(host)) is not None]
        return tuple(dict.fromkeys(found))

    @property
    def requires_signatures(self) -> bool:
        """Some host follows `signatures` with `require`: only releases whose signature was checked on
        staging may be reused."""
        return any(settings.require for settings in self.signature_settings())

    def identity_file_of(self, host: Host) -> str:
        return host.identity_file or self.identity_file

    @property
    def uses_sudo(self) -> bool:
        return any(host.sudo for host in self.hosts)

    def select(self, hosts: tuple[str, ...] = (), groups: tuple[str, ...] = ()) -> Inventory:
        """The inventory narrowed to the named hosts and/or the members of the named groups.

        Unknown names are an InputError naming them (nothing is contacted).
        """
        if not hosts and not groups:
            return self
        known_hosts = {host.name for host in self.hosts}
        known_groups = {group for host in self.hosts for group in host.groups}
        unknown = [name for name in hosts if name not in known_hosts]
        if unknown:
            raise InputError(
                f"--hosts: {', '.join(unknown)} not in {self.path} (hosts: {', '.join(sorted(known_hosts))})"
            )
        missing = [group for group in groups if group not in known_groups]
        if missing:
            have = ", ".join(sorted(known_groups)) or "none"
            raise InputError(f"--group: {', '.join(missing)} not in {self.path} (groups: {have})")
        chosen = tuple(
            host for host in self.hosts if host.name in hosts or any(group in host.groups for group in groups)
        )
        return dataclasses.replace(self, hosts=chosen)

    def secrets(self) -> list[str]:
        """Every value that must never appear in output, logs or history."""
        values = [var.value for var in self.env if var.secret] + [self.passphrase, self.sudo_password]
        values += self.watch.secrets() if self.watch is not None else []
        return [value for value in values if value]

    def hook(self, name: str) -> str:
        return self.hooks.get(name, "")

    def host(self, name: str) -> Host:
        return self._by_name[name]

    @cached_property
    def _by_name(self) -> dict[str, Host]:
        """Hosts by name (asked once per host in several phases: a scan each time would grow as n^2)."""
        return {host.name: host for host in self.hosts}


# --- the watch after a switch (parsed by deployer.inventory.watch) ---

DEFAULT_FAILURE_LIMIT = 2  # failed samples of one check that fail the watch (one noisy sample does not)
DEFAULT_ERROR_LIMIT = 4  # unreadable samples in a row before on_error applies (Argo's consecutiveErrorLimit)
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True)
class Condition:
    """When a value fails its check: `fail_if: "> 0.05"`."""

    operator: str
    threshold: float

    def fails(self, value: float) -> bool:
        return _OPERATORS[self.operator](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.operator} {self.threshold:g}"


@dataclass(frozen=True)
class WatchCheck:
    """One check of the watch. `target` is the provider's URL, or the command for command kinds."""

    name: str
    kind: str
    target: str
    query: str = ""
    fail_if: Condition | None = None
    on_empty: str = ""
    filters: tuple[str, ...] = ()
    timeout: float = 10.0
    bearer_token: str = field(default="", repr=False)
    username: str = ""
    password: str = field(default="", repr=False)

    @property
    def reads_a_provider(self) -> bool:
        return self.kind in ("prometheus", "alertmanager", "prometheus_alerts")

    def threshold_text(self) -> str:
        """What failing means for this check, in words shown beside its value."""
        if self.kind == "prometheus":
            return f"fails if {self.fail_if}"
        if self.kind in ("alertmanager", "prometheus_alerts"):
            return "fails if any alert fires"
        if self.kind == "host_command":
            return "fails if it exits non-zero on any host"
        return "fails if it exits non-zero"


@dataclass(frozen=True)
class Watch:
    """How long to watch after a switch (`duration`, the bake time), how often to sample, and when
    to give up: `failure_limit` failed samples of one check fail the watch; `error_limit`
    unreadable samples of one check in a row make it undecidable, and `on_error` says what then."""

    duration: float
    interval: float
    checks: tuple[WatchCheck, ...]
    failure_limit: int = DEFAULT_FAILURE_LIMIT
    error_limit: int = DEFAULT_ERROR_LIMIT
    on_error: str = "rollback"

    def secrets(self) -> list[str]:
        return [value for check in self.checks for value in (check.bearer_token, check.password) if value]
