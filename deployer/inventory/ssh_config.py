"""OpenSSH client configs (ssh_config, `vagrant ssh-config` output): the one reader, used by the
inventory (hosts named by alias, ProxyJump bastions) and by `deployer.playground.vagrant`."""

from __future__ import annotations

import os
from typing import Any

from deployer.inventory.checks import Checker
from deployer.inventory.model import ADDRESS_RE, Gateway
from deployer.inventory.sections import gateway_section


def host_blocks(text: str) -> list[tuple[list[str], set[str]]]:
    """Every `Host` block of an ssh_config text, in order: its names/patterns and the keywords it sets."""
    blocks: list[tuple[list[str], set[str]]] = []
    for line in text.splitlines():
        words = line.strip().replace("=", " ", 1).split()
        if not words or words[0].startswith("#"):
            continue
        keyword = words[0].lower()
        if keyword == "host":
            blocks.append(([word.strip('"') for word in words[1:]], set()))
        elif keyword == "match":
            blocks.append(([], set()))
        elif blocks:
            blocks[-1][1].add(keyword)
    return blocks


class SshConfig:
    """An OpenSSH client config file (e.g. `vagrant ssh-config`'s output), read with paramiko's parser."""

    def __init__(self, check: Checker, path: str, text: str | None = None) -> None:
        import paramiko  # only inventories that use an ssh_config pay for the import

        self.check = check
        self.path = path
        try:
            if text is None:
                with open(path, encoding="utf-8") as handle:
                    text = handle.read()
            self.config = paramiko.SSHConfig.from_text(text)
        except (OSError, UnicodeDecodeError, ValueError, paramiko.ssh_exception.ConfigParseError) as exc:
            raise check.error("ssh.config", f"cannot read {path}: {exc}") from None
        self.blocks = host_blocks(text)  # paramiko's get_hostnames() fails on a `Match` block
        self.names = {name for patterns, _keywords in self.blocks for name in patterns}

    def raw(self, alias: str) -> dict[str, Any]:
        """What OpenSSH would use for `alias` (paramiko's lookup: first value wins, patterns, Match)."""
        return dict(self.config.lookup(alias))

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
        parsed = gateway_section(self.check, jump, where)
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
