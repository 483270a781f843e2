"""Loading an inventory: YAML read strictly, every section checked, hosts resolved (their own
settings, then their first group's, then their ssh_config entry's, then the inventory's).

Every problem is an `InventoryError` naming the file, the key and what is wrong, raised before any
host is contacted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from deployer.errors import InventoryError
from deployer.inventory.checks import Checker, UniqueKeyLoader, kind
from deployer.inventory.model import (
    ADDRESS_RE,
    DEFAULT_KEEP_FAILED_RELEASES,
    DEFAULT_KEEP_RELEASES,
    DEFAULT_PARALLEL,
    NAME_RE,
    USER_RE,
    Gateway,
    Host,
    Inventory,
    Rollout,
    Timeouts,
)
from deployer.inventory.sections import (
    GROUP_KEYS,
    HOST_KEYS,
    SSH_KEYS,
    TIMEOUT_KEYS,
    TOP_KEYS,
    env_section,
    flag,
    gateway_section,
    health_check_section,
    hooks_section,
    rollout_section,
    shared_section,
    signatures_section,
)
from deployer.inventory.ssh_config import SshConfig
from deployer.inventory.watch import watch_section


def parse_inventory(text: str, path: str, environ: Mapping[str, str] | None = None) -> Inventory:
    """Parse and check inventory text; `path` names the file in errors and anchors relative paths.

    `environ` (default: this process's environment) provides `from_env` values and the passphrase.
    """
    environ = os.environ if environ is None else environ
    check = Checker(path)
    top = check.mapping(_read_yaml(text, path), "", TOP_KEYS, {"deploy_to", "user", "ssh", "hosts"})
    deploy_to = check.deploy_to(top["deploy_to"], "deploy_to")
    user = check.string(top["user"], "user", USER_RE, "user name")
    ssh = _ssh(check, top["ssh"], environ)
    sudo_password, sudo_password_source = _sudo_password(check, top, environ)
    defaults = _HostDefaults(
        user=user,
        deploy_to=deploy_to,
        gateway=gateway_section(check, top["gateway"], "gateway") if top.get("gateway") is not None else None,
        sudo=flag(check, top.get("sudo", False), "sudo"),
    )
    hosts = _hosts(check, top, ssh.config, defaults)
    if sudo_password_source and not any(host.sudo for host in hosts):
        raise check.error("sudo_password", "no host uses sudo (set sudo: true for the hosts or groups that need it)")
    return Inventory(
        path=path,
        deploy_to=deploy_to,
        user=user,
        identity_file=ssh.identity_file,
        known_hosts=ssh.known_hosts,
        hosts=tuple(hosts),
        passphrase=ssh.passphrase,
        sudo_password=sudo_password,
        sudo_password_source=sudo_password_source,
        env=env_section(check, top["env"], environ) if top.get("env") is not None else (),
        watch=watch_section(check, top["watch"], environ) if top.get("watch") is not None else None,
        **_settings(check, top),
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


def _read_yaml(text: str, path: str) -> Any:
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
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
    return data


@dataclass(frozen=True)
class _Ssh:
    identity_file: str
    known_hosts: str
    passphrase: str
    config: SshConfig | None


def _ssh(check: Checker, value: Any, environ: Mapping[str, str]) -> _Ssh:
    ssh = check.mapping(value, "ssh", SSH_KEYS, {"identity_file", "known_hosts"})
    passphrase = ""
    if ssh.get("passphrase_env") is not None:
        _source, passphrase = check.from_environ(ssh["passphrase_env"], "ssh.passphrase_env", environ)
    config = None
    if ssh.get("config") is not None:
        config = SshConfig(check, check.local_file(ssh["config"], "ssh.config"))
    return _Ssh(
        check.local_file(ssh["identity_file"], "ssh.identity_file"),
        check.local_file(ssh["known_hosts"], "ssh.known_hosts"),
        passphrase,
        config,
    )


def _sudo_password(check: Checker, top: Mapping[str, Any], environ: Mapping[str, str]) -> tuple[str, str]:
    """(password, where it comes from: "ask" or "env:NAME"); never written in the inventory itself."""
    if top.get("sudo_password") is not None and top.get("sudo_password_env") is not None:
        raise check.error("sudo_password_env", "give either sudo_password: ask or sudo_password_env, not both")
    if top.get("sudo_password") is not None:
        if top["sudo_password"] != "ask":
            raise check.error(
                "sudo_password",
                "only 'ask' is allowed here (the password is asked once); never write a password into an inventory",
            )
        return "", "ask"
    if top.get("sudo_password_env") is not None:
        source, password = check.from_environ(top["sudo_password_env"], "sudo_password_env", environ)
        return password, f"env:{source}"
    return "", ""


def _optional_string(check: Checker, top: Mapping[str, Any], key: str) -> str:
    return check.string(top[key], key) if top.get(key) is not None else ""


def _settings(check: Checker, top: Mapping[str, Any]) -> dict[str, Any]:
    """The run's settings: commands, limits, rollout, pruning, shared paths, hooks."""
    timeouts = Timeouts()
    if "timeouts" in top:
        raw = check.mapping(top["timeouts"], "timeouts", TIMEOUT_KEYS, set())
        timeouts = Timeouts(**{name: float(check.number(raw[name], f"timeouts.{name}", 0.1, 86400)) for name in raw})
    keep_failed = top.get("keep_failed_releases", DEFAULT_KEEP_FAILED_RELEASES)
    return {
        "validate": _optional_string(check, top, "validate"),
        "parallel": check.number(top.get("parallel", DEFAULT_PARALLEL), "parallel", 1, 1000, integer=True),
        "fetch_parallel": check.number(top["fetch_parallel"], "fetch_parallel", 1, 1000, integer=True)
        if top.get("fetch_parallel") is not None
        else 0,
        "timeouts": timeouts,
        "health_check": health_check_section(check, top["health_check"])
        if top.get("health_check") is not None
        else None,
        "rollout": rollout_section(check, top["rollout"]) if top.get("rollout") is not None else Rollout(),
        "signatures": signatures_section(check, top["signatures"]) if top.get("signatures") is not None else None,
        "keep_releases": check.number(top.get("keep_releases", DEFAULT_KEEP_RELEASES), "keep_releases", 1, 1000, True),
        "keep_failed_releases": check.number(keep_failed, "keep_failed_releases", 0, 1000, True),
        "shared": shared_section(check, top["shared"]) if top.get("shared") is not None else (),
        "hooks": hooks_section(check, top["hooks"]) if top.get("hooks") is not None else {},
        "migrate": _optional_string(check, top, "migrate"),
        "rollback_migrations": _optional_string(check, top, "rollback_migrations"),
    }


@dataclass(frozen=True)
class _HostDefaults:
    """What a host gets when neither it, its groups nor its ssh_config entry says otherwise."""

    user: str
    deploy_to: str
    gateway: Gateway | None
    sudo: bool


def _groups(check: Checker, top: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    if top.get("groups") is None:
        return {}
    value = top["groups"]
    raw = check.mapping(value, "groups", set(value) if isinstance(value, Mapping) else set(), set())
    settings: dict[str, Mapping[str, Any]] = {}
    for group, group_settings in raw.items():
        if not NAME_RE.fullmatch(group):
            raise check.error(f"groups.{group}", "group names use letters, digits, '.', '_' and '-'")
        settings[group] = check.mapping(group_settings or {}, f"groups.{group}", GROUP_KEYS, set())
    return settings


def _hosts(check: Checker, top: Mapping[str, Any], ssh_config: SshConfig | None, defaults: _HostDefaults) -> list[Host]:
    hosts_raw = top["hosts"]
    if not isinstance(hosts_raw, Mapping) or not hosts_raw:
        raise check.error("hosts", f"expected a non-empty mapping of host names, got {kind(hosts_raw)}")
    group_settings = _groups(check, top)
    hosts: list[Host] = []
    endpoints: dict[tuple[Gateway | None, str, int], str] = {}
    for name, spec in hosts_raw.items():
        host = _host(check, name, spec, ssh_config, group_settings, defaults)
        endpoint = (host.gateway, host.address, host.port)
        if endpoint in endpoints:
            raise check.error(
                f"hosts.{name}.address", f"{host.address}:{host.port} is already used by host {endpoints[endpoint]}"
            )
        endpoints[endpoint] = name
        hosts.append(host)
    return hosts


def _host(
    check: Checker,
    name: Any,
    spec: Any,
    ssh_config: SshConfig | None,
    group_settings: Mapping[str, Mapping[str, Any]],
    defaults: _HostDefaults,
) -> Host:
    key = f"hosts.{name}"
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise check.error(key, "host names use letters, digits, '.', '_' and '-' (at most 63)")
    spec = check.mapping({} if spec is None and ssh_config is not None else spec, key, HOST_KEYS, set())
    if "address" not in spec and ssh_config is None:
        raise check.error(f"{key}.address", "required key is missing (or set ssh.config and name the host as there)")
    if "address" in spec and "ssh_alias" in spec:
        raise check.error(f"{key}.ssh_alias", "give either address or ssh_alias, not both")
    groups: list[str] = []
    if spec.get("groups") is not None:
        if not isinstance(spec["groups"], list):
            raise check.error(f"{key}.groups", f"expected a list of group names, got {kind(spec['groups'])}")
        groups = [check.string(g, f"{key}.groups[{i}]", NAME_RE, "group name") for i, g in enumerate(spec["groups"])]
    merged, source_of = _merged_settings(check, key, name, spec, groups, ssh_config, group_settings)
    where = lambda setting: source_of.get(setting, key)  # noqa: E731 - names the key an error points at
    gateway = defaults.gateway
    if "gateway" in merged:
        value = merged["gateway"]
        gateway = value if isinstance(value, Gateway) else gateway_section(check, value, f"{where('gateway')}.gateway")
    deploy_to = ""
    if merged.get("deploy_to") is not None:
        deploy_to = check.deploy_to(merged["deploy_to"], f"{where('deploy_to')}.deploy_to")
    return Host(
        name=name,
        address=check.string(merged["address"], f"{where('address')}.address", ADDRESS_RE, "address"),
        port=check.number(merged.get("port", 22), f"{where('port')}.port", 1, 65535, integer=True),
        user=check.string(merged["user"], f"{where('user')}.user", USER_RE, "user name")
        if "user" in merged
        else defaults.user,
        groups=tuple(groups),
        deploy_to=deploy_to if deploy_to != defaults.deploy_to else "",
        identity_file=merged.get("identity_file", ""),
        gateway=gateway,
        sudo=flag(check, merged["sudo"], f"{where('sudo')}.sudo") if "sudo" in merged else defaults.sudo,
        signatures=signatures_section(check, merged["signatures"], f"{where('signatures')}.signatures")
        if merged.get("signatures") is not None
        else None,
    )


def _merged_settings(
    check: Checker,
    key: str,
    name: str,
    spec: Mapping[str, Any],
    groups: list[str],
    ssh_config: SshConfig | None,
    group_settings: Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, Any], dict[str, str]]:
    """A host's settings by precedence (its own > its first group with the setting > its ssh_config
    entry), and the key each came from (for error messages)."""
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
    return merged, source_of
