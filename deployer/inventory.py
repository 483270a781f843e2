"""Loading and checking YAML inventories: which hosts, how to reach them, where to deploy.

Every problem is reported as an `InventoryError` naming the file, the key and what is wrong,
before any host is contacted. Unknown keys are rejected so that a typo (`valdiate:`) is not
silently ignored.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from deployer.errors import InputError, InventoryError

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

    def deploy_to_of(self, host: Host) -> str:
        """Where `host` deploys: its own or its group's deploy_to, else the inventory's."""
        return host.deploy_to or self.deploy_to

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
        return [value for value in values if value]

    def hook(self, name: str) -> str:
        return self.hooks.get(name, "")

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of keeping the last one."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (list, dict)):
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_unique_mapping,
)


class _Checker:
    """Reads typed values out of the parsed YAML, raising errors that name file and key."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, key: str, problem: str) -> InventoryError:
        return InventoryError(self.path, key, problem)

    def mapping(self, value: Any, key: str, allowed: set[str], required: set[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(key, f"expected a mapping, got {_kind(value)}")
        for name in value:
            if not isinstance(name, str):
                raise self.error(key, f"keys must be strings, got {name!r}")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.error(
                _join(key, unknown[0]),
                f"unknown key (allowed here: {', '.join(sorted(allowed))})",
            )
        missing = sorted(required - set(value))
        if missing:
            raise self.error(_join(key, missing[0]), "required key is missing")
        return value

    def string(self, value: Any, key: str, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
        if not isinstance(value, str) or isinstance(value, bool):
            raise self.error(key, f"expected a string, got {_kind(value)}")
        if not value.strip():
            raise self.error(key, "must not be empty")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.error(key, f"{value!r} is not a valid {what}")
        return value

    def number(self, value: Any, key: str, low: float, high: float, integer: bool = False) -> Any:
        ok_types: tuple[type, ...] = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_types):
            kind = "an integer" if integer else "a number"
            raise self.error(key, f"expected {kind} between {low:g} and {high:g}, got {_kind(value)}")
        if not low <= float(value) <= high:  # type: ignore[arg-type]  # int or float, checked above
            raise self.error(key, f"must be between {low:g} and {high:g}, got {value}")
        return value

    def deploy_to(self, value: Any, key: str) -> str:
        text = self.string(value, key)
        if not text.startswith("/"):
            raise self.error(key, f"must be an absolute path, got {text!r}")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
            raise self.error(key, "must not contain control characters (tabs, newlines, NUL)")
        normal = "/" + posixpath.normpath(text).lstrip("/")
        if normal == "/" or ".." in text.split("/"):
            raise self.error(key, f"{text!r} is not a usable deploy folder (not '/', no '..')")
        return normal

    def from_environ(self, value: Any, key: str, environ: Mapping[str, str]) -> tuple[str, str]:
        """(variable name, its value) for a key naming a variable of this machine's environment."""
        source = self.string(value, key, ENV_NAME_RE, "variable name")
        if source not in environ:
            raise self.error(key, f"${source} is not set on this machine")
        return source, environ[source]

    def local_file(self, value: Any, key: str) -> str:
        text = self.string(value, key)
        path = os.path.expanduser(text)
        if not os.path.isabs(path):
            path = os.path.join(os.path.dirname(os.path.abspath(self.path)), path)
        path = os.path.normpath(path)
        if not os.path.isfile(path):
            raise self.error(key, f"file not found: {path}")
        return path


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


TOP_KEYS = {
    "deploy_to",
    "user",
    "ssh",
    "validate",
    "hosts",
    "parallel",
    "timeouts",
    "health_check",
    "rollout",
    "keep_releases",
    "keep_failed_releases",
    "shared",
    "hooks",
    "migrate",
    "rollback_migrations",
    "env",
    "groups",
    "gateway",
    "sudo",
    "sudo_password",
    "sudo_password_env",
}
SSH_KEYS = {"identity_file", "known_hosts", "passphrase_env", "config"}
ENV_VALUE_KEYS = {"value", "from_env", "secret"}
GROUP_KEYS = {"user", "port", "deploy_to", "gateway", "sudo"}
HOST_KEYS = GROUP_KEYS | {"address", "groups", "ssh_alias"}
GATEWAY_KEYS = {"address", "port", "user"}
GATEWAY_RE = re.compile(
    r"^(?:(?P<user>[^@\s]+)@)?(?P<address>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?$"
)
TIMEOUT_KEYS = {"connect", "command", "stage", "hook", "migrate", "validate"}
HEALTH_KEYS = {"command", "timeout", "retries", "interval"}
ROLLOUT_KEYS = {"batch", "pause"}


def _health_check(check: _Checker, value: Any) -> HealthCheck:
    if isinstance(value, str):
        return HealthCheck(check.string(value, "health_check"))
    raw = check.mapping(value, "health_check", HEALTH_KEYS, {"command"})
    return HealthCheck(
        command=check.string(raw["command"], "health_check.command"),
        timeout=float(check.number(raw.get("timeout", 10), "health_check.timeout", 0.1, 3600)),
        retries=check.number(raw.get("retries", 3), "health_check.retries", 0, 100, integer=True),
        interval=float(check.number(raw.get("interval", 2), "health_check.interval", 0, 3600)),
    )


def _flag(check: _Checker, value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise check.error(key, f"expected true or false, got {_kind(value)}")
    return value


def _rollout(check: _Checker, value: Any) -> Rollout:
    raw = check.mapping(value, "rollout", ROLLOUT_KEYS, set())
    pause = float(check.number(raw.get("pause", 0), "rollout.pause", 0, 86400))
    batch = raw.get("batch")
    if batch is None:
        return Rollout(pause=pause)
    if isinstance(batch, str):
        match = BATCH_PERCENT_RE.fullmatch(batch.strip())
        if not match or not 1 <= int(match.group(1)) <= 100:
            raise check.error("rollout.batch", f"expected a host count or a percentage like '25%', got {batch!r}")
        return Rollout(percent=int(match.group(1)), pause=pause)
    return Rollout(batch=check.number(batch, "rollout.batch", 1, 100000, integer=True), pause=pause)


def _shared(check: _Checker, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise check.error("shared", f"expected a list of paths inside the release, got {_kind(value)}")
    paths: list[str] = []
    for index, item in enumerate(value):
        key = f"shared[{index}]"
        text = check.string(item, key)
        name = text.rstrip("/")
        parts = name.split("/")
        if (
            text.startswith("/")
            or any(part in ("", ".", "..") for part in parts)
            or any(ord(ch) < 32 or ord(ch) == 127 for ch in text)
            or parts[0] == "previousVersion"
        ):
            raise check.error(
                key,
                f"{text!r} must be a relative path inside the release (no '..', no leading '/', not previousVersion)",
            )
        if any(name == other.rstrip("/") for other in paths):
            raise check.error(key, f"{text!r} is listed twice")
        paths.append(text)
    return tuple(paths)


def _env(check: _Checker, value: Any, environ: Mapping[str, str]) -> tuple[EnvVar, ...]:
    raw = check.mapping(value, "env", set(value) if isinstance(value, Mapping) else set(), set())
    variables: list[EnvVar] = []
    for name, spec in raw.items():
        key = f"env.{name}"
        if not ENV_NAME_RE.fullmatch(name) or name.startswith("DEPLOYER_"):
            raise check.error(key, "variable names use letters, digits and '_' (and may not start with DEPLOYER_)")
        if isinstance(spec, (str, int, float)) and not isinstance(spec, bool):
            variables.append(EnvVar(name, str(spec)))
            continue
        spec = check.mapping(spec, key, ENV_VALUE_KEYS, set())
        secret = _flag(check, spec.get("secret", False), f"{key}.secret")
        if ("value" in spec) == ("from_env" in spec):
            raise check.error(key, "give exactly one of value: or from_env:")
        if "from_env" in spec:
            _source, text = check.from_environ(spec["from_env"], f"{key}.from_env", environ)
            variables.append(EnvVar(name, text, secret))
        else:
            text = spec["value"]
            if not isinstance(text, (str, int, float)) or isinstance(text, bool):
                raise check.error(f"{key}.value", f"expected a string, got {_kind(text)}")
            variables.append(EnvVar(name, str(text), secret))
    return tuple(variables)


def _hooks(check: _Checker, value: Any) -> dict[str, str]:
    raw = check.mapping(value, "hooks", set(REMOTE_HOOKS + LOCAL_HOOKS), set())
    return {name: check.string(command, f"hooks.{name}") for name, command in raw.items() if command is not None}


def _gateway(check: _Checker, value: Any, key: str) -> Gateway | None:
    """`user@address:port` (user and port optional), a mapping, or false for "connect directly"."""
    if value is False:
        return None
    if isinstance(value, str):
        match = GATEWAY_RE.fullmatch(value.strip())
        if match is None:
            raise check.error(
                key, f"{value!r} is not a gateway: use user@address:port, or a mapping with address, port, user"
            )
        address, port, user = match["address"].strip("[]"), int(match["port"] or 22), match["user"] or ""
        if not 1 <= port <= 65535:
            raise check.error(key, f"port must be between 1 and 65535, got {port}")
        if user and not USER_RE.fullmatch(user):
            raise check.error(key, f"{user!r} is not a valid user name")
        if not ADDRESS_RE.fullmatch(address):
            raise check.error(key, f"{address!r} is not a valid address")
        return Gateway(address, port, user)
    raw = check.mapping(value, key, GATEWAY_KEYS, {"address"})
    address = check.string(raw["address"], f"{key}.address", ADDRESS_RE, "address")
    port = check.number(raw.get("port", 22), f"{key}.port", 1, 65535, integer=True)
    user = check.string(raw["user"], f"{key}.user", USER_RE, "user name") if raw.get("user") is not None else ""
    return Gateway(address, port, user)


def _host_patterns(path: str) -> set[str]:
    """The names and patterns of every `Host` line of an ssh_config file."""
    names: set[str] = set()
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            words = line.replace("=", " ", 1).split()
            if len(words) > 1 and words[0].lower() == "host":
                names.update(word.strip('"') for word in words[1:])
    return names


class _SshConfig:
    """An OpenSSH client config file (e.g. `vagrant ssh-config`'s output), read with paramiko's parser."""

    def __init__(self, check: _Checker, path: str) -> None:
        import paramiko  # only inventories that use an ssh_config pay for the import

        self.check = check
        self.path = path
        try:
            self.config = paramiko.SSHConfig.from_path(path)
        except (OSError, UnicodeDecodeError, ValueError, paramiko.ssh_exception.ConfigParseError) as exc:
            raise check.error("ssh.config", f"cannot read {path}: {exc}") from None
        self.names = _host_patterns(path)  # paramiko's get_hostnames() fails on a `Match` block

    def lookup(self, alias: str, key: str) -> dict[str, Any]:
        """Address, port, user, identity file and gateway that OpenSSH would use for `alias`."""
        found = self.config.lookup(alias)
        if alias not in self.names and set(found) <= {"hostname"}:
            raise self.check.error(key, f"no Host entry for {alias!r} in {self.path}")
        where = f"{key} (Host {alias} in {self.path})"
        if found.get("proxycommand"):
            raise self.check.error(key, f"ProxyCommand in {self.path} is not supported; use ProxyJump or gateway")
        settings: dict[str, Any] = {"address": found.get("hostname", alias)}
        if not ADDRESS_RE.fullmatch(settings["address"]):
            raise self.check.error(key, f"HostName {settings['address']!r} of {alias} in {self.path} is not an address")
        if "port" in found:
            if not str(found["port"]).isdigit() or not 1 <= int(found["port"]) <= 65535:
                raise self.check.error(key, f"Port {found['port']!r} of {alias} in {self.path} is not a port")
            settings["port"] = int(found["port"])
        if "user" in found:
            settings["user"] = found["user"]
        if found.get("identityfile"):
            settings["identity_file"] = self._identity(found, alias, key)
        jump = found.get("proxyjump", "")
        if jump and jump.lower() != "none":
            if "," in jump:
                raise self.check.error(key, f"ProxyJump {jump!r} of {alias}: only one jump host is supported")
            settings["gateway"] = self._jump(jump, where)
        return settings

    def _jump(self, jump: str, where: str) -> Gateway:
        """A ProxyJump value: [user@]host[:port], where host may itself be an alias in the config."""
        parsed = _gateway(self.check, jump, where)
        assert parsed is not None
        if parsed.address in self.names:
            via = self.config.lookup(parsed.address)
            if via.get("proxyjump") and via["proxyjump"].lower() != "none":
                raise self.check.error(
                    where, f"jump host {parsed.address} has a ProxyJump itself: only one hop is supported"
                )
            return Gateway(
                via.get("hostname", parsed.address),
                parsed.port if ":" in jump.split("@")[-1] else int(via.get("port", 22)),
                parsed.user or via.get("user", ""),
                self._identity(via, parsed.address, where) if via.get("identityfile") else "",
            )
        return parsed

    def _identity(self, found: dict[str, Any], alias: str, key: str) -> str:
        identity = os.path.expanduser(found["identityfile"][0])
        if not os.path.isabs(identity):
            identity = os.path.join(os.path.dirname(self.path), identity)
        if not os.path.isfile(identity):
            raise self.check.error(key, f"IdentityFile of {alias} in {self.path} not found: {identity}")
        return os.path.normpath(identity)


def parse_inventory(text: str, path: str, environ: Mapping[str, str] | None = None) -> Inventory:
    """Parse and check inventory text; `path` names the file in errors and anchors relative paths.

    `environ` (default: this process's environment) provides `from_env` values and the passphrase.
    """
    environ = os.environ if environ is None else environ
    check = _Checker(path)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise InventoryError(path, "", f"invalid YAML at {where}: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise InventoryError(path, "", f"invalid YAML: {exc}") from None
    except RecursionError:
        raise InventoryError(path, "", "invalid YAML: nested too deeply") from None
    if data is None:
        raise InventoryError(path, "", "the inventory is empty")
    top = check.mapping(data, "", TOP_KEYS, {"deploy_to", "user", "ssh", "hosts"})

    deploy_to = check.deploy_to(top["deploy_to"], "deploy_to")
    user = check.string(top["user"], "user", USER_RE, "user name")
    ssh = check.mapping(top["ssh"], "ssh", SSH_KEYS, {"identity_file", "known_hosts"})
    identity_file = check.local_file(ssh["identity_file"], "ssh.identity_file")
    known_hosts = check.local_file(ssh["known_hosts"], "ssh.known_hosts")
    passphrase = ""
    if ssh.get("passphrase_env") is not None:
        _source, passphrase = check.from_environ(ssh["passphrase_env"], "ssh.passphrase_env", environ)
    ssh_config = None
    if ssh.get("config") is not None:
        ssh_config = _SshConfig(check, check.local_file(ssh["config"], "ssh.config"))
    top_gateway = _gateway(check, top["gateway"], "gateway") if top.get("gateway") is not None else None
    top_sudo = _flag(check, top.get("sudo", False), "sudo")
    sudo_password = ""
    sudo_password_source = ""
    if top.get("sudo_password") is not None and top.get("sudo_password_env") is not None:
        raise check.error("sudo_password_env", "give either sudo_password: ask or sudo_password_env, not both")
    if top.get("sudo_password") is not None:
        if top["sudo_password"] != "ask":
            raise check.error(
                "sudo_password",
                "only 'ask' is allowed here (the password is asked once); never write a password into an inventory",
            )
        sudo_password_source = "ask"
    if top.get("sudo_password_env") is not None:
        source, sudo_password = check.from_environ(top["sudo_password_env"], "sudo_password_env", environ)
        sudo_password_source = f"env:{source}"

    validate = ""
    if top.get("validate") is not None:
        validate = check.string(top["validate"], "validate")
    parallel = DEFAULT_PARALLEL
    if "parallel" in top:
        parallel = check.number(top["parallel"], "parallel", 1, 1000, integer=True)
    timeouts = Timeouts()
    if "timeouts" in top:
        raw = check.mapping(top["timeouts"], "timeouts", TIMEOUT_KEYS, set())
        timeouts = Timeouts(**{name: float(check.number(raw[name], f"timeouts.{name}", 0.1, 86400)) for name in raw})

    health = _health_check(check, top["health_check"]) if top.get("health_check") is not None else None
    rollout = _rollout(check, top["rollout"]) if top.get("rollout") is not None else Rollout()
    keep_releases = check.number(top.get("keep_releases", DEFAULT_KEEP_RELEASES), "keep_releases", 1, 1000, True)
    keep_failed = check.number(
        top.get("keep_failed_releases", DEFAULT_KEEP_FAILED_RELEASES), "keep_failed_releases", 0, 1000, True
    )
    shared = _shared(check, top["shared"]) if top.get("shared") is not None else ()
    hooks = _hooks(check, top["hooks"]) if top.get("hooks") is not None else {}
    env = _env(check, top["env"], environ) if top.get("env") is not None else ()
    migrate = check.string(top["migrate"], "migrate") if top.get("migrate") is not None else ""
    rollback_migrations = ""
    if top.get("rollback_migrations") is not None:
        rollback_migrations = check.string(top["rollback_migrations"], "rollback_migrations")

    hosts_raw = top["hosts"]
    if not isinstance(hosts_raw, Mapping) or not hosts_raw:
        raise check.error("hosts", f"expected a non-empty mapping of host names, got {_kind(hosts_raw)}")
    hosts: list[Host] = []
    endpoints: dict[tuple[Gateway | None, str, int], str] = {}
    group_settings: dict[str, Mapping[str, Any]] = {}
    if top.get("groups") is not None:
        raw_groups = check.mapping(
            top["groups"], "groups", set(top["groups"]) if isinstance(top["groups"], Mapping) else set(), set()
        )
        for group, settings in raw_groups.items():
            if not NAME_RE.fullmatch(group):
                raise check.error(f"groups.{group}", "group names use letters, digits, '.', '_' and '-'")
            group_settings[group] = check.mapping(settings or {}, f"groups.{group}", GROUP_KEYS, set())
    for name, spec in hosts_raw.items():
        key = f"hosts.{name}"
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise check.error(key, "host names use letters, digits, '.', '_' and '-' (at most 63)")
        if spec is None and ssh_config is not None:
            spec = {}
        spec = check.mapping(spec, key, HOST_KEYS, set())
        if "address" not in spec and ssh_config is None:
            raise check.error(
                f"{key}.address", "required key is missing (or set ssh.config and name the host as there)"
            )
        if "address" in spec and "ssh_alias" in spec:
            raise check.error(f"{key}.ssh_alias", "give either address or ssh_alias, not both")
        groups: list[str] = []
        if spec.get("groups") is not None:
            if not isinstance(spec["groups"], list):
                raise check.error(f"{key}.groups", f"expected a list of group names, got {_kind(spec['groups'])}")
            for index, group in enumerate(spec["groups"]):
                groups.append(check.string(group, f"{key}.groups[{index}]", NAME_RE, "group name"))
        # Settings: the host's own, else its first group's that has one, else its ssh_config entry's,
        # else the inventory's.
        merged: dict[str, Any] = {}
        source_of: dict[str, str] = {}
        if "address" not in spec:
            assert ssh_config is not None
            alias = check.string(spec.get("ssh_alias", name), f"{key}.ssh_alias", ADDRESS_RE, "ssh_config alias")
            for setting, value in ssh_config.lookup(alias, key).items():
                merged[setting], source_of[setting] = value, f"{key} (ssh_config)"
        for group in reversed(groups):
            for setting, value in group_settings.get(group, {}).items():
                merged[setting], source_of[setting] = value, f"groups.{group}"
        for setting in (GROUP_KEYS | {"address"}) & set(spec):
            merged[setting], source_of[setting] = spec[setting], key
        address = check.string(merged["address"], f"{source_of['address']}.address", ADDRESS_RE, "address")
        port = check.number(merged.get("port", 22), f"{source_of.get('port', key)}.port", 1, 65535, integer=True)
        host_user = user
        if "user" in merged:
            host_user = check.string(merged["user"], f"{source_of['user']}.user", USER_RE, "user name")
        host_deploy_to = ""
        if merged.get("deploy_to") is not None:
            host_deploy_to = check.deploy_to(merged["deploy_to"], f"{source_of['deploy_to']}.deploy_to")
        gateway = top_gateway
        if "gateway" in merged:
            value = merged["gateway"]
            gateway = value if isinstance(value, Gateway) else _gateway(check, value, f"{source_of['gateway']}.gateway")
        sudo = top_sudo
        if "sudo" in merged:
            sudo = _flag(check, merged["sudo"], f"{source_of['sudo']}.sudo")
        endpoint = (gateway, address, port)
        if endpoint in endpoints:
            raise check.error(f"{key}.address", f"{address}:{port} is already used by host {endpoints[endpoint]}")
        endpoints[endpoint] = name
        hosts.append(
            Host(
                name=name,
                address=address,
                port=port,
                user=host_user,
                groups=tuple(groups),
                deploy_to=host_deploy_to if host_deploy_to != deploy_to else "",
                identity_file=merged.get("identity_file", ""),
                gateway=gateway,
                sudo=sudo,
            )
        )
    if sudo_password_source and not any(host.sudo for host in hosts):
        raise check.error("sudo_password", "no host uses sudo (set sudo: true for the hosts or groups that need it)")

    return Inventory(
        path=path,
        deploy_to=deploy_to,
        user=user,
        identity_file=identity_file,
        known_hosts=known_hosts,
        hosts=tuple(hosts),
        validate=validate,
        parallel=parallel,
        timeouts=timeouts,
        health_check=health,
        rollout=rollout,
        keep_releases=keep_releases,
        keep_failed_releases=keep_failed,
        shared=shared,
        hooks=hooks,
        migrate=migrate,
        rollback_migrations=rollback_migrations,
        env=env,
        passphrase=passphrase,
        sudo_password=sudo_password,
        sudo_password_source=sudo_password_source,
    )


def load_inventory(path: str) -> Inventory:
    """Read and check the inventory at `path`."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise InventoryError(path, "", "inventory file not found") from None
    except IsADirectoryError:
        raise InventoryError(path, "", "is a folder, not an inventory file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(path, "", f"cannot read the inventory: {exc}") from None
    return parse_inventory(text, path)
