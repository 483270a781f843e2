"""Loading and checking YAML inventories: which hosts, how to reach them, where to deploy.

Every problem is reported as an `InventoryError` naming the file, the key and what is wrong,
before any host is contacted. Unknown keys are rejected so that a typo (`valdiate:`) is not
silently ignored.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from deployer.errors import InventoryError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$", re.IGNORECASE)
ADDRESS_RE = re.compile(r"^[A-Za-z0-9._:-]{1,253}$")

DEFAULT_PARALLEL = 32


@dataclass(frozen=True)
class Timeouts:
    """Seconds allowed for each kind of wait; paramiko's own defaults (an hour) are never used."""

    connect: float = 10.0
    command: float = 60.0
    stage: float = 900.0


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    port: int = 22
    user: str = ""


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
        if pattern is not None and not pattern.match(value):
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


TOP_KEYS = {"deploy_to", "user", "ssh", "validate", "hosts", "parallel", "timeouts"}
SSH_KEYS = {"identity_file", "known_hosts"}
HOST_KEYS = {"address", "port", "user"}
TIMEOUT_KEYS = {"connect", "command", "stage"}


def parse_inventory(text: str, path: str) -> Inventory:
    """Parse and check inventory text; `path` names the file in errors and anchors relative paths."""
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
    ssh = check.mapping(top["ssh"], "ssh", SSH_KEYS, SSH_KEYS)
    identity_file = check.local_file(ssh["identity_file"], "ssh.identity_file")
    known_hosts = check.local_file(ssh["known_hosts"], "ssh.known_hosts")

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

    hosts_raw = top["hosts"]
    if not isinstance(hosts_raw, Mapping) or not hosts_raw:
        raise check.error("hosts", f"expected a non-empty mapping of host names, got {_kind(hosts_raw)}")
    hosts: list[Host] = []
    endpoints: dict[tuple[str, int], str] = {}
    for name, spec in hosts_raw.items():
        key = f"hosts.{name}"
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise check.error(key, "host names use letters, digits, '.', '_' and '-' (at most 63)")
        spec = check.mapping(spec, key, HOST_KEYS, {"address"})
        address = check.string(spec["address"], f"{key}.address", ADDRESS_RE, "address")
        port = check.number(spec.get("port", 22), f"{key}.port", 1, 65535, integer=True)
        host_user = user
        if "user" in spec:
            host_user = check.string(spec["user"], f"{key}.user", USER_RE, "user name")
        if (address, port) in endpoints:
            raise check.error(f"{key}.address", f"{address}:{port} is already used by host {endpoints[address, port]}")
        endpoints[address, port] = name
        hosts.append(Host(name=name, address=address, port=port, user=host_user))

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
