"""The inventory's keys, and the parsers of its smaller sections (health check, rollout, shared paths,
env, hooks, gateway), each checked with `Checker` so an error names the file and the key."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from deployer.inventory.checks import Checker, kind
from deployer.inventory.model import (
    ADDRESS_RE,
    BATCH_PERCENT_RE,
    ENV_NAME_RE,
    LOCAL_HOOKS,
    MAX_ALLOWED_SIGNERS,
    MAX_REVOKED,
    REMOTE_HOOKS,
    USER_RE,
    EnvVar,
    Gateway,
    HealthCheck,
    Rollout,
    Signatures,
)

TOP_KEYS = {
    "deploy_to",
    "user",
    "ssh",
    "validate",
    "hosts",
    "parallel",
    "fetch_parallel",
    "timeouts",
    "health_check",
    "rollout",
    "signatures",
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
    "watch",
}
SSH_KEYS = {"identity_file", "known_hosts", "passphrase_env", "config"}
ENV_VALUE_KEYS = {"value", "from_env", "secret"}
GROUP_KEYS = {"user", "port", "deploy_to", "gateway", "sudo", "signatures"}
HOST_KEYS = GROUP_KEYS | {"address", "groups", "ssh_alias"}
GATEWAY_KEYS = {"address", "port", "user"}
GATEWAY_RE = re.compile(
    r"^(?:(?P<user>[^@\s]+)@)?(?P<address>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?$"
)
TIMEOUT_KEYS = {"connect", "command", "stage", "hook", "migrate", "validate", "fetch_wait"}
HEALTH_KEYS = {"command", "timeout", "retries", "interval", "expect"}
HEALTH_EXPECT = ("release", "version", "commit")
ROLLOUT_KEYS = {"batch", "pause"}


def health_check_section(check: Checker, value: Any) -> HealthCheck:
    if isinstance(value, str):
        return HealthCheck(check.string(value, "health_check"))
    raw = check.mapping(value, "health_check", HEALTH_KEYS, {"command"})
    return HealthCheck(
        command=check.string(raw["command"], "health_check.command"),
        timeout=float(check.number(raw.get("timeout", 10), "health_check.timeout", 0.1, 3600)),
        retries=check.number(raw.get("retries", 3), "health_check.retries", 0, 100, integer=True),
        interval=float(check.number(raw.get("interval", 2), "health_check.interval", 0, 3600)),
        expect=check.choice(raw["expect"], "health_check.expect", HEALTH_EXPECT) if "expect" in raw else "",
    )


def flag(check: Checker, value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise check.error(key, f"expected true or false, got {kind(value)}")
    return value


SIGNATURE_KEYS = {"allowed_signers", "namespace", "require", "revoked"}
NAMESPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@._-]{0,63}$")


def signatures_section(check: Checker, value: Any, key: str = "signatures") -> Signatures:
    raw = check.mapping(value, key, SIGNATURE_KEYS, {"allowed_signers"})
    namespace = check.string(raw.get("namespace", "deployer-release"), f"{key}.namespace")
    if not NAMESPACE_RE.fullmatch(namespace):
        raise check.error(f"{key}.namespace", f"{namespace!r} is not a namespace (letters, digits, @ . _ -)")
    require = raw.get("require", False)
    if not isinstance(require, bool):
        raise check.error(f"{key}.require", f"expected true or false, got {kind(require)}")
    settings = Signatures(
        allowed_signers=check.local_file(raw["allowed_signers"], f"{key}.allowed_signers"),
        namespace=namespace,
        require=require,
        revoked=check.local_file(raw["revoked"], f"{key}.revoked") if raw.get("revoked") is not None else "",
    )
    for name, path, limit in (
        ("allowed_signers", settings.allowed_signers, MAX_ALLOWED_SIGNERS),
        ("revoked", settings.revoked, MAX_REVOKED),
    ):
        if path and os.path.getsize(path) > limit:
            raise check.error(f"{key}.{name}", f"{path} is over {limit // 1024} KiB, more than hosts are sent")
    return settings


def rollout_section(check: Checker, value: Any) -> Rollout:
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


def shared_section(check: Checker, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise check.error("shared", f"expected a list of paths inside the release, got {kind(value)}")
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


def env_section(check: Checker, value: Any, environ: Mapping[str, str]) -> tuple[EnvVar, ...]:
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
        secret = flag(check, spec.get("secret", False), f"{key}.secret")
        if ("value" in spec) == ("from_env" in spec):
            raise check.error(key, "give exactly one of value: or from_env:")
        if "from_env" in spec:
            _source, text = check.from_environ(spec["from_env"], f"{key}.from_env", environ)
            variables.append(EnvVar(name, text, secret))
        else:
            text = spec["value"]
            if not isinstance(text, (str, int, float)) or isinstance(text, bool):
                raise check.error(f"{key}.value", f"expected a string, got {kind(text)}")
            variables.append(EnvVar(name, str(text), secret))
    return tuple(variables)


def hooks_section(check: Checker, value: Any) -> dict[str, str]:
    raw = check.mapping(value, "hooks", set(REMOTE_HOOKS + LOCAL_HOOKS), set())
    return {name: check.string(command, f"hooks.{name}") for name, command in raw.items() if command is not None}


def gateway_section(check: Checker, value: Any, key: str) -> Gateway | None:
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
