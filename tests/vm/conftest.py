"""The VM suite's fleet: real Debian VMs (Vagrant + libvirt + QEMU) brought up by `inv vm-fleet-up`.

What the tests read on a VM they read over the OpenSSH client as the `vagrant` admin user, with
the host keys `vm-fleet-up` checked against each VM's serial console: never through the tool.
Under QEMU's TCG a new SSH connection costs a VM about 2 s of CPU (key exchange, sshd's re-exec,
PAM, sudo): the tests wait on the VM itself (a loop in one session) rather than polling from here.
Power is cut with `virsh destroy` (the QEMU process is killed: what the guest had not flushed is
lost) and given back with `virsh start`.

The suite fails, never skips, when the VMs cannot start. It takes the fleet down at the end unless
DEPLOYER_VM_KEEP=1 (to iterate on the tests against a running fleet).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.locate import SAMPLE_APP
from deployer.playground.handlers import write_manifest
from deployer.playground.vmfleet import console_dir, ensure_libvirt
from deployer.release import pack_directory
from deployer.sanitize import sanitize
from tests.conftest import REPO
from tests.conftest import run_inv as inv

VMS = ["web1", "web2"]  # two VMs: a fleet (revert of the others) at the lowest boot cost under TCG
DEPLOY_TO = "/srv/app"
LIBVIRT = "qemu:///system"


def inv_background(*args: str, prefix: list[str] | None = None) -> subprocess.Popen[str]:
    """The CLI started in its own process group (stopped as a whole by `kill_group`)."""
    return subprocess.Popen(
        [*(prefix or []), sys.executable, "-m", "invoke", *args],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def kill_group(process: subprocess.Popen[str]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


class VmFleet:
    def __init__(self, folder: Path, inventory: Path) -> None:
        self.folder = folder
        self.inventory = inventory
        self.settings: dict[str, Any] = yaml.safe_load(inventory.read_text())
        base = inventory.parent
        self.known_hosts = str((base / self.settings["ssh"]["known_hosts"]).resolve())
        self.identity = str((base / self.settings["ssh"]["identity_file"]).resolve())
        self.addresses = {name: host["address"] for name, host in self.settings["hosts"].items()}
        self.ssh_config = folder / "ssh_config"
        self.refresh_ssh_config()

    def refresh_ssh_config(self) -> None:
        done = subprocess.run(
            ["vagrant", "ssh-config"], cwd=REPO / "vagrant", capture_output=True, text=True, check=True, timeout=120
        )
        self.ssh_config.write_text(done.stdout)

    # -- the admin's view of a VM (OpenSSH client, vagrant user, sudo) --------------------------
    def sh(self, name: str, script: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run `script` as root on VM `name` (sh on stdin) over the OpenSSH client.

        Patient: under QEMU's TCG, beside the rest of the suite on two CPUs, a VM starved of CPU has
        taken over 15 s to send its SSH banner and a minute for a five-second loop (two CI runs)."""
        done = subprocess.run(
            [
                "ssh", "-F", str(self.ssh_config), "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=30",
                name, "sudo", "sh", "-s",
            ],
            input=script,
            capture_output=True,
            text=True,
            timeout=timeout,
        )  # fmt: skip
        if check and done.returncode != 0:
            seen = self.seen_from_outside(name) if done.returncode == 255 else ""  # ssh itself failed
            raise AssertionError(f"on {name}: exit {done.returncode}\n{script}\n{done.stdout}\n{done.stderr}{seen}")
        return done

    def seen_from_outside(self, name: str) -> str:
        """What libvirt and the VM's serial console say, for a VM ssh cannot reach (the console's
        last lines show a kernel stall, an OOM kill or a boot stuck before sshd)."""
        state = subprocess.run(
            ["virsh", "-c", LIBVIRT, "domstate", "--reason", f"vagrant_{name}"], capture_output=True, text=True
        )
        console = console_dir() / f"{name}.log"
        lines = console.read_bytes().decode("utf-8", "replace").splitlines()[-25:] if console.exists() else []
        tail = "\n".join(sanitize(line) for line in lines)  # the guest's text: no escapes reach a terminal
        said = state.stdout.strip() or state.stderr.strip()
        return f"\nlibvirt: {said}\nits console ({console}), last lines:\n{tail}"

    def complete_release(self, name: str) -> str:
        """The release `current` points at on `name`, after checking every file against its manifest."""
        done = self.sh(
            name,
            f'cd {DEPLOY_TO}/current && sha256sum -c --quiet --strict MANIFEST.sha256 && basename "$(pwd -P)"',
            check=False,
        )
        assert done.returncode == 0, f"{name}: current is not a complete release:\n{done.stdout}{done.stderr}"
        return done.stdout.strip()

    def health(self, name: str, timeout: float = 90) -> str:
        """The sample app's /health answer on `name`, from this machine (waits for the service to be up)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{self.addresses[name]}:8080/health", timeout=3) as answer:
                    return answer.read().decode().strip()
            except (OSError, urllib.error.URLError) as error:
                last = str(error)
            time.sleep(1)
        raise AssertionError(f"{name}: /health did not answer in {timeout} s ({last})")

    def clean(self) -> None:
        """Empty deploy folders on every VM (the service waits, retrying, for a first release)."""
        for name in VMS:
            self.sh(
                name,
                f"systemctl stop sample-app; rm -rf {DEPLOY_TO}; install -d -o deploy -g deploy {DEPLOY_TO}"
                " && systemctl start --no-block sample-app",  # it fails until a release is there
            )

    # -- power ------------------------------------------------------------------------------------
    def power_cut(self, *names: str) -> None:
        for name in names:
            subprocess.run(["virsh", "-c", LIBVIRT, "destroy", f"vagrant_{name}"], check=True, capture_output=True)

    def power_on(self, *names: str, wait: bool = True) -> None:
        for name in names:
            subprocess.run(["virsh", "-c", LIBVIRT, "start", f"vagrant_{name}"], check=True, capture_output=True)
        for name in names if wait else ():
            self.wait_up(name)

    def boot_id(self, name: str) -> str:
        return self.sh(name, "cat /proc/sys/kernel/random/boot_id").stdout.strip()

    def reboot(self, name: str) -> None:
        """A clean reboot, a second from now (the session that asks for it ends first)."""
        self.sh(name, "systemd-run --on-active=1 systemctl reboot")

    def wait_up(self, name: str, timeout: float = 300, not_boot: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                done = self.sh(name, "cat /proc/sys/kernel/random/boot_id", check=False, timeout=60)
            except subprocess.TimeoutExpired:
                continue
            if done.returncode == 0 and done.stdout.strip() != not_boot:
                return
            time.sleep(1)
        raise AssertionError(f"{name} did not come back within {timeout} s{self.seen_from_outside(name)}")

    # -- inventories and artifacts --------------------------------------------------------------
    def make_inventory(self, path: Path, **changes: Any) -> str:
        settings = dict(self.settings)
        settings["ssh"] = {"identity_file": self.identity, "known_hosts": self.known_hosts}
        settings.update(changes)
        path.write_text(yaml.safe_dump(settings, sort_keys=False))
        return str(path)


def hold(marker: str, then: str) -> str:
    """A command that, on a host where $DEPLOYER_DEPLOY_TO/hold-<marker> exists, says so
    (in-<marker>) and waits there until that file is removed (or power is cut), then runs `then`.
    It flushes nothing:
    a `sync` here would write out what the power cut is meant to catch unwritten."""
    where = '"${DEPLOYER_DEPLOY_TO:-' + DEPLOY_TO + '}"'
    return (
        f"if [ -e {where}/hold-{marker} ]; then touch {where}/in-{marker}; "
        f"while [ -e {where}/hold-{marker} ]; do sleep 0.2; done; rm -f {where}/in-{marker}; fi; {then}"
    )


def build_artifact(folder: Path, version: str, payload_kb: int = 2048) -> str:
    """The sample app with VERSION and a payload of random files, its MANIFEST.sha256 and a .tar.gz."""
    tree = folder / f"app-{version}"
    shutil.copytree(SAMPLE_APP, tree)
    (tree / "VERSION").write_text(version + "\n")
    blobs = tree / "public" / "blobs"
    blobs.mkdir()
    for index in range(8):
        (blobs / f"blob-{index}.bin").write_bytes(os.urandom(payload_kb * 1024 // 8))
    write_manifest(str(tree))
    out = folder / f"app-{version}.tar.gz"
    pack_directory(str(tree), str(out))
    return str(out)


def virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-c", LIBVIRT, *args], capture_output=True, text=True, check=True).stdout


def leave_what_a_killed_run_leaves() -> list[str]:
    """Define, shut off, the VMs a run killed before `vm-fleet-down` leaves (vagrant_web1.. with their
    disks), as a CI run cancelled beside this one did: unless this checkout's own fleet is up
    (DEPLOYER_VM_KEEP), where those names are its own."""
    if any((REPO / "vagrant" / ".vagrant" / "machines").glob("*/libvirt/id")):
        return []
    ensure_libvirt()
    if subprocess.run(["virsh", "-c", LIBVIRT, "pool-info", "default"], capture_output=True).returncode != 0:
        virsh("pool-define-as", "default", "dir", "--target", "/var/lib/libvirt/images")
        virsh("pool-start", "default")
    names = [f"vagrant_{name}" for name in VMS]
    for name in names:
        virsh("vol-create-as", "default", f"{name}.img", "1M", "--format", "qcow2")
        xml = (
            f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
            "<os><type arch='x86_64'>hvm</type></os><devices><disk type='volume' device='disk'>"
            f"<driver name='qemu' type='qcow2'/><source pool='default' volume='{name}.img'/>"
            "<target dev='vda' bus='virtio'/></disk></devices></domain>"
        )
        with tempfile.NamedTemporaryFile("w", suffix=".xml") as handle:
            handle.write(xml)
            handle.flush()
            virsh("define", handle.name)
    return names


@pytest.fixture(scope="session")
def vm_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmFleet]:
    if os.geteuid() != 0:
        pytest.fail("the VM suite starts libvirt and VMs and needs root (see README)")
    folder = tmp_path_factory.mktemp("vms")
    inventory = folder / "vagrant.yml"
    started = time.monotonic()
    orphans = leave_what_a_killed_run_leaves()
    up = inv("vm-fleet-up", "--count", str(len(VMS)), "--out", str(inventory), timeout=1800)
    if up.returncode != 0:
        inv("vm-fleet-down", timeout=300)
        pytest.fail(f"the VM fleet did not come up (exit {up.returncode}):\n{up.stdout}\n{up.stderr}")
    print(f"\nVM fleet up in {time.monotonic() - started:.0f} s", file=sys.stderr)
    for name in orphans:
        # vm-fleet-up said so, and the VM of that name is now this checkout's (its uuid is Vagrant's id)
        assert f"removed the VM {name}, left shut off by a run that was killed" in up.stdout + up.stderr
        machine = REPO / "vagrant" / ".vagrant" / "machines" / name.removeprefix("vagrant_") / "libvirt" / "id"
        assert virsh("domuuid", name).strip() == machine.read_text().strip()
    try:
        yield VmFleet(folder, inventory)
    finally:
        if os.environ.get("DEPLOYER_VM_KEEP") != "1":
            down = inv("vm-fleet-down", timeout=300)
            assert down.returncode == 0, down.stdout + down.stderr


@pytest.fixture
def vms(vm_fleet: VmFleet) -> VmFleet:
    """The fleet with empty deploy folders and every VM running."""
    for name in VMS:
        state = subprocess.run(
            ["virsh", "-c", LIBVIRT, "domstate", f"vagrant_{name}"], capture_output=True, text=True, check=True
        )
        if state.stdout.strip() != "running":
            vm_fleet.power_on(name)
        else:
            vm_fleet.wait_up(name)  # a TCG guest starved of this machine's CPU can answer late
    vm_fleet.clean()
    return vm_fleet


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("vm-artifacts")
    return {version: build_artifact(folder, version) for version in ("v1", "v2", "v3")}
