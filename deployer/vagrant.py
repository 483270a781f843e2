"""An inventory for the Vagrant fleet, from `vagrant ssh-config` output.

The VMs' host keys are collected once with `ssh-keyscan` into the inventory's own known_hosts
(trust on first use, said out loud), so every later connection is verified against them.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deployer.errors import InputError, InventoryError
from deployer.inventory import NAME_RE
from deployer.inventory.checks import Checker
from deployer.inventory.ssh_config import SshConfig, host_blocks

HEALTH = "curl -fsS http://127.0.0.1:8080/health"


@dataclass(frozen=True)
class SshHost:
    alias: str
    hostname: str
    port: int
    identity_file: str


def parse_ssh_config(text: str) -> list[SshHost]:
    """The `Host` blocks of an ssh_config text (as `vagrant ssh-config` prints), in order.

    Read with the inventory's own ssh_config reader (`deployer.inventory.ssh_config`), so an
    inventory naming these hosts by alias resolves them the same way.
    """
    try:
        config = SshConfig(Checker("ssh config"), "ssh config", text)
    except InventoryError as error:
        raise InputError(error.problem) from None
    hosts: list[SshHost] = []
    for patterns, keywords in host_blocks(text):
        alias = patterns[0] if len(patterns) == 1 else " ".join(patterns)
        if not NAME_RE.fullmatch(alias):
            raise InputError(f"ssh config: host alias {alias!r} is not a usable host name")
        found = config.raw(alias)
        if "hostname" not in keywords or not found.get("identityfile"):
            raise InputError(f"ssh config: host {alias} has no HostName or IdentityFile")
        port = str(found.get("port", "22"))
        if not port.isdigit():
            raise InputError(f"ssh config: host {alias} has port {port!r}")
        identity = found["identityfile"][0].strip('"')
        hosts.append(SshHost(alias, found["hostname"], int(port), os.path.expanduser(identity)))
    if not hosts:
        raise InputError("ssh config: no Host entries (is the Vagrant fleet up? `cd vagrant && vagrant up`)")
    identities = {host.identity_file for host in hosts}
    if len(identities) > 1:
        raise InputError("ssh config: the hosts use different keys; this inventory supports one identity_file")
    return hosts


def keyscan(hosts: list[SshHost]) -> str:
    """known_hosts lines for every host, from ssh-keyscan (ed25519 and ecdsa keys)."""
    lines: list[str] = []
    for host in hosts:
        done = subprocess.run(
            ["ssh-keyscan", "-T", "5", "-t", "ed25519,ecdsa", "-p", str(host.port), host.hostname],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        found = [line for line in done.stdout.splitlines() if line and not line.startswith("#")]
        if not found:
            raise InputError(f"ssh-keyscan got no host key from {host.alias} ({host.hostname}:{host.port})")
        lines += found
    return "\n".join(lines) + "\n"


def write_inventory(hosts: list[SshHost], out: str, known_hosts: str, deploy_to: str = "/srv/app") -> None:
    folder = os.path.dirname(os.path.abspath(out))
    lines = [
        "# Written by `inv vagrant-inventory` from `vagrant ssh-config`; host keys from ssh-keyscan (first use).",
        f"deploy_to: {deploy_to}",
        "user: deploy",
        "ssh:",
        f"  identity_file: {os.path.relpath(hosts[0].identity_file, folder)}",
        f"  known_hosts: {os.path.relpath(known_hosts, folder)}",
        'validate: "sh bin/check"',
        f'health_check: {{command: "{HEALTH}", timeout: 5, retries: 5, interval: 1}}',
        "hooks:",
        '  after_switch: "sudo systemctl reload sample-app"',
        '  after_rollback: "sudo systemctl reload sample-app"',
        "hosts:",
    ]
    lines += [f"  {host.alias}: {{address: {host.hostname}, port: {host.port}}}" for host in hosts]
    Path(out).write_text("\n".join(lines) + "\n")


def vagrant_inventory(ssh_config: str | None, out: str, folder: str) -> list[SshHost]:
    """Read `vagrant ssh-config` (run in `folder`, or the given file), scan keys, write the inventory."""
    if ssh_config:
        try:
            text = Path(ssh_config).read_text()
        except OSError as exc:
            raise InputError(f"cannot read {ssh_config}: {exc.strerror}") from None
    else:
        try:
            done = subprocess.run(["vagrant", "ssh-config"], cwd=folder, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise InputError(
                "vagrant is not installed here; pass --ssh-config FILE (saved `vagrant ssh-config`)"
            ) from None
        if done.returncode != 0:
            raise InputError(f"`vagrant ssh-config` failed: {done.stderr.strip()}")
        text = done.stdout
    hosts = parse_ssh_config(text)
    known_hosts = os.path.splitext(out)[0] + ".known_hosts"
    Path(known_hosts).write_text(keyscan(hosts))
    write_inventory(hosts, out, known_hosts)
    return hosts
