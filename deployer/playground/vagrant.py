"""An inventory for the Vagrant fleet, from `vagrant ssh-config` output.

The VMs' host keys are collected once with `ssh-keyscan` into the inventory's own known_hosts, so
every later connection is verified against them. Where a VM's serial console log is kept (the
libvirt fleet of `inv vm-fleet-up`: `vagrant/.console/<name>.log`), each scanned key must match a
fingerprint the VM printed there at boot, an out-of-band check; elsewhere it is trust on first use,
said out loud. The `deploy` user logs in with the fleet's deploy key (`vagrant/.deploy_key/`, made
by the Vagrantfile) when it exists, else with the key `vagrant ssh-config` names for every host.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deployer.errors import InputError, InventoryError
from deployer.inventory import NAME_RE
from deployer.inventory.checks import Checker
from deployer.inventory.ssh_config import SshConfig, host_blocks
from deployer.invocation import command
from deployer.keyscan import key_fingerprint, scan

HEALTH = "sh bin/health 8080"
RELOAD = "sudo systemctl reload-or-restart sample-app"
FINGERPRINT_RE = re.compile(r"host-key-fingerprint: \d+ (SHA256:[A-Za-z0-9+/]+)")


@dataclass(frozen=True)
class SshHost:
    alias: str
    hostname: str
    port: int
    identity_file: str


def parse_ssh_config(text: str, identity_file: str | None = None) -> list[SshHost]:
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
        identity = identity_file or os.path.expanduser(found["identityfile"][0].strip('"'))
        hosts.append(SshHost(alias, found["hostname"], int(port), identity))
    if not hosts:
        raise InputError(f"ssh config: no Host entries (is the Vagrant fleet up? `{command('vm-fleet-up')}`)")
    identities = {host.identity_file for host in hosts}
    if len(identities) > 1:
        raise InputError("ssh config: the hosts use different keys; this inventory supports one identity_file")
    return hosts


def console_fingerprints(console_log: str) -> set[str]:
    """The host key fingerprints a VM printed on its serial console (`host-keys.service` of the box)."""
    try:
        text = Path(console_log).read_text(errors="replace")
    except FileNotFoundError:
        return set()
    return set(FINGERPRINT_RE.findall(text))


def check_against_console(host: SshHost, lines: list[str], console_log: str) -> bool:
    """True when every scanned key matches the VM's console; False when there is no console to ask."""
    printed = console_fingerprints(console_log)
    if not printed:
        return False
    for line in lines:
        if key_fingerprint(line) not in printed:
            raise InputError(
                f"host key of {host.alias} ({host.hostname}:{host.port}) from ssh-keyscan is "
                f"{key_fingerprint(line)}, which the VM did not print on its console ({console_log}): "
                "someone else answers at that address; nothing was written"
            )
    return True


def keyscan(hosts: list[SshHost], console_folder: str | None = None) -> tuple[str, list[str]]:
    """known_hosts lines for every host, from ssh-keyscan (ed25519 and ecdsa keys), and the hosts
    whose keys were checked against their serial console."""
    scanned = scan([(host.hostname, host.port) for host in hosts], "ed25519,ecdsa")
    lines: list[str] = []
    checked: list[str] = []
    for host in hosts:
        found = scanned[(host.hostname, host.port)]
        if not found:
            raise InputError(f"ssh-keyscan got no host key from {host.alias} ({host.hostname}:{host.port})")
        if console_folder and check_against_console(host, found, os.path.join(console_folder, f"{host.alias}.log")):
            checked.append(host.alias)
        lines += found
    return "\n".join(lines) + "\n", checked


def write_inventory(hosts: list[SshHost], out: str, known_hosts: str, deploy_to: str = "/srv/app") -> None:
    folder = os.path.dirname(os.path.abspath(out))
    lines = [
        f"# Written by `{command('vagrant-inventory')}` from `vagrant ssh-config`; host keys from ssh-keyscan.",
        f"deploy_to: {deploy_to}",
        "user: deploy",
        "ssh:",
        f"  identity_file: {os.path.relpath(hosts[0].identity_file, folder)}",
        f"  known_hosts: {os.path.relpath(known_hosts, folder)}",
        "# QEMU without KVM on a busy machine can take longer than the default 10 s to answer a connection",
        "timeouts: {connect: 30}",
        'validate: "sh bin/check"',
        "# the service serves the release just switched to (the sample app's bin/health)",
        f'health_check: {{command: "{HEALTH}", timeout: 5, retries: 10, interval: 1, expect: release}}',
        "hooks:                # the provisioned sudoers rule allows exactly this",
        f'  after_switch: "{RELOAD}"',
        f'  after_rollback: "{RELOAD}"',
        "hosts:",
    ]
    lines += [f"  {host.alias}: {{address: {host.hostname}, port: {host.port}}}" for host in hosts]
    Path(out).write_text("\n".join(lines) + "\n")


def vagrant_inventory(ssh_config: str | None, out: str, folder: str) -> tuple[list[SshHost], list[str]]:
    """Read `vagrant ssh-config` (run in `folder`, or the given file), scan keys, write the inventory.

    Returns the hosts and the names of those whose keys were checked against their serial console."""
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
    # the fleet's own deploy key and console logs belong to the fleet in `folder`, not to a saved config
    deploy_key = os.path.join(folder, ".deploy_key", "id_ed25519")
    own = not ssh_config
    hosts = parse_ssh_config(text, deploy_key if own and os.path.exists(deploy_key) else None)
    known_hosts = os.path.splitext(out)[0] + ".known_hosts"
    lines, checked = keyscan(hosts, os.path.join(folder, ".console") if own else None)
    Path(known_hosts).write_text(lines)
    write_inventory(hosts, out, known_hosts)
    return hosts, checked
