"""`inv verify`: the testinfra suite in deployer/checks/ run against every host of an inventory.

It connects with the OpenSSH client (testinfra's ssh backend, one multiplexed connection per
host), verifying host keys against the inventory's known_hosts: an independent look at the hosts,
not through the deployer's own connections or scripts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from deployer.inventory import Inventory

CHECKS = Path(__file__).resolve().parent / "checks" / "test_release.py"


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
    hosts = ",".join(f"ssh://{host.user or inventory.user}@{host.address}:{host.port}" for host in inventory.hosts)
    # testinfra does not pass --ssh-extra-args on in every version; an ssh_config file always works.
    control_dir = tempfile.mkdtemp(prefix="deployer-verify-")
    config = os.path.join(control_dir, "ssh_config")
    Path(config).write_text(
        "Host *\n"
        f"  UserKnownHostsFile {inventory.known_hosts}\n"
        "  StrictHostKeyChecking yes\n"
        "  IdentitiesOnly yes\n"
        "  BatchMode yes\n"
        f"  ConnectTimeout {max(1, int(inventory.timeouts.connect))}\n"
        f"  ControlPath {control_dir}/%C\n"  # one multiplexed connection per host for all checks
    )
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
        "--ssh-identity-file",
        inventory.identity_file,
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
                    "-p",
                    str(host.port),
                    f"{host.user or inventory.user}@{host.address}",
                ],
                capture_output=True,
                timeout=30,
                check=False,
            )
        shutil.rmtree(control_dir, ignore_errors=True)
    output = done.stdout + done.stderr
    if not quiet:
        print(output.rstrip())
    return VerifyResult(done.returncode == 0, output)
