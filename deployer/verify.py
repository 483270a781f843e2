"""`inv verify`: the testinfra suite in deployer/checks/ run against every host of an inventory.

It connects with the OpenSSH client (testinfra's ssh backend, one multiplexed connection per
host), verifying host keys against the inventory's known_hosts: an independent look at the hosts,
not through the deployer's own connections or scripts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from deployer.inventory import Inventory
from deployer.scratch import Scratch

CHECKS = Path(__file__).resolve().parent / "checks" / "test_release.py"


def ssh_config_text(inventory: Inventory, control_dir: str) -> str:
    """An OpenSSH client config reaching every host as the deployer does, host keys verified."""
    lines: list[str] = []
    for host in inventory.hosts:
        lines += [
            f"Host {host.name}",
            f"  HostName {host.address}",
            f"  Port {host.port}",
            f"  User {host.user or inventory.user}",
            f"  IdentityFile {inventory.identity_file_of(host)}",
        ]
        if host.gateway is not None:
            gateway = host.gateway
            lines.append(f"  ProxyJump {gateway.user or inventory.user}@{gateway.address}:{gateway.port}")
    for gateway in sorted(  # jump hosts with a key of their own (a ProxyJump alias's IdentityFile)
        {host.gateway for host in inventory.hosts if host.gateway and host.gateway.identity_file}, key=str
    ):
        lines += [f"Host {gateway.address}", f"  IdentityFile {gateway.identity_file}"]
    lines += [
        "Host *",
        f"  UserKnownHostsFile {inventory.known_hosts}",
        "  StrictHostKeyChecking yes",
        f"  IdentityFile {inventory.identity_file}",
        "  IdentitiesOnly yes",
        "  BatchMode yes",
        f"  ConnectTimeout {max(1, int(inventory.timeouts.connect))}",
        f"  ControlPath {control_dir}/%C",  # one multiplexed connection per host for all checks
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    output: str

    @property
    def failed(self) -> list[str]:
        """pytest's one-line summary of each failed or erroring check (host in the test id)."""
        return [line for line in self.output.splitlines() if line.startswith(("FAILED", "ERROR"))]


def verify(
    inventory: Inventory, release: str, junit: str | None = None, lock_free: bool = True, quiet: bool = False
) -> VerifyResult:
    """Run the checks on every host for `release`; the pytest output is returned (and shown unless quiet)."""
    # testinfra does not pass --ssh-extra-args on in every version; an ssh_config file always works.
    # One Host block per inventory host (its resolved address, port, user, key and gateway).
    with Scratch("verify") as control_dir:
        config = os.path.join(control_dir, "ssh_config")
        Path(config).write_text(ssh_config_text(inventory, control_dir))
        hosts = ",".join(f"ssh://{host.name}" for host in inventory.hosts)
        command = [
            sys.executable,
            "-m",
            "pytest",
            str(CHECKS),
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(CHECKS.parent),
            "--hosts",
            hosts,
            "--ssh-config",
            config,
            "-q",
            "-rfE",
            "--no-header",
        ]
        if junit:
            command += ["--junitxml", junit]
        env = {
            **os.environ,
            "DEPLOYER_VERIFY_DEPLOY_TO": inventory.deploy_to,
            "DEPLOYER_VERIFY_DEPLOY_TO_OF": json.dumps(
                {f"{host.name}": inventory.deploy_to_of(host) for host in inventory.hosts}
            ),
            "DEPLOYER_VERIFY_RELEASE": release,
            "DEPLOYER_VERIFY_SHARED": "\n".join(inventory.shared),
            "DEPLOYER_VERIFY_HEALTH": inventory.health_check.command if inventory.health_check else "",
            "DEPLOYER_VERIFY_LOCK_FREE": "1" if lock_free else "0",
        }
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
        finally:
            for host in inventory.hosts:  # close the multiplexed connections now, not after ControlPersist
                subprocess.run(
                    [
                        "ssh",
                        "-F",
                        config,
                        "-O",
                        "exit",
                        f"{host.name}",
                    ],
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
    output = done.stdout + done.stderr
    if not quiet:
        print(output.rstrip())
    return VerifyResult(done.returncode == 0, output)
