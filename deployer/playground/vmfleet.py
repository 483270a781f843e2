"""The Vagrant VM fleet of `vagrant/` on libvirt: set this machine up, build the box, bring it up, take it down.

`up` is one command from a bare Debian machine (with the packages `./dev.sh setup` installs):
1. libvirt: used if it answers; otherwise `virtlogd` and `libvirtd` are started here with pid files
   under RUN_DIR (systemd may not be PID 1: containers, CI) and stopped by those pids in `down`.
2. acceleration: KVM only where the CPU offers it (`vmx`/`svm`) and `/dev/kvm` is usable; TCG
   otherwise (a nested KVM guest without those flags hangs at boot instead of failing).
3. the box `deployer/bookworm`: built from Debian's packages by `vagrant/box/build.sh` into the
   cache (`$DEPLOYER_VM_CACHE`, default `~/.cache/deployer-vm`) when missing or made by another
   version of that script, then added to Vagrant; its kernel and initrd copied where QEMU may read.
4. `vagrant up --provider libvirt` in `vagrant/`, its output kept in a log file, not on the screen.
5. the inventory (`deployer.playground.vagrant`), with every host key checked against the fingerprints the VM
   printed on its serial console at boot.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from deployer.errors import FleetError, InputError
from deployer.invocation import command

VAGRANT_DIR = Path(__file__).resolve().parents[2] / "vagrant"
BUILD_SCRIPT = VAGRANT_DIR / "box" / "build.sh"
BOX_NAME = "deployer/bookworm"
BOOT_DIR = Path("/var/lib/libvirt/boot")
RUN_DIR = Path("/run/deployer-vm")
LIBVIRT = "qemu:///system"
TOOLS = ("vagrant", "virsh", "libvirtd", "virtlogd", "qemu-system-x86_64", "qemu-img", "mmdebstrap", "ssh-keyscan")


@dataclass(frozen=True)
class VmFleetSettings:
    vms: int = 3
    memory_mb: int = 512

    def check(self) -> None:
        if not 1 <= self.vms <= 9:
            raise InputError(f"--vms must be 1-9, not {self.vms}")
        if not 256 <= self.memory_mb <= 8192:
            raise InputError(f"--memory must be 256-8192 (MB), not {self.memory_mb}")


def cache_dir() -> Path:
    return Path(os.environ.get("DEPLOYER_VM_CACHE") or Path.home() / ".cache" / "deployer-vm")


def console_dir() -> Path:
    return VAGRANT_DIR / ".console"


def _log(message: str) -> None:
    print(f"== {message}", file=sys.stderr, flush=True)


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None and not os.access(f"/usr/sbin/{tool}", os.X_OK)]


def _virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["virsh", "-c", LIBVIRT, *args], capture_output=True, text=True, timeout=120, check=False)
    if check and done.returncode != 0:
        raise FleetError(f"virsh {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def _libvirt_answers() -> bool:
    try:
        return _virsh("version", check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _pid_of(pid_file: Path) -> int | None:
    """The pid in a daemon's pid file, if that process still runs that daemon (`<name>.pid`)."""
    try:
        pid = int(pid_file.read_text().strip())
        command = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if command == pid_file.stem else None


def ensure_libvirt() -> None:
    """libvirt answering on qemu:///system: the running one, or daemons started here (pid files in RUN_DIR)."""
    _kvm_device_for_libvirt()
    if _libvirt_answers():
        return
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    for daemon in ("virtlogd", "libvirtd"):
        pid_file = RUN_DIR / f"{daemon}.pid"
        if _pid_of(pid_file) is None:
            done = subprocess.run([daemon, "-d", "-p", str(pid_file)], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise FleetError(f"could not start {daemon}: {done.stderr.strip() or done.stdout.strip()}")
    deadline = time.monotonic() + 30
    while not _libvirt_answers():
        if time.monotonic() > deadline:
            raise FleetError(f"libvirtd was started but {LIBVIRT} does not answer after 30 s")
        time.sleep(0.5)


def _kvm_device_for_libvirt() -> None:
    """Give /dev/kvm Debian's usual mode (root:kvm 0660) where no udev did.

    With /dev/kvm root-only, libvirt finds KVM when it probes QEMU (as root) but not for the
    `libvirt-qemu` user, takes its cached capabilities for outdated and probes again on every call
    (about 50 s each: `vagrant up` then takes 8 minutes instead of 3).
    """
    kvm = Path("/dev/kvm")
    if not kvm.exists() or os.geteuid() != 0:
        return
    try:
        kvm_gid = grp.getgrnam("kvm").gr_gid
    except KeyError:
        return
    info = kvm.stat()
    if info.st_gid != kvm_gid or info.st_mode & 0o060 != 0o060:
        os.chown(kvm, -1, kvm_gid)
        os.chmod(kvm, 0o660)
        _log("/dev/kvm set to root:kvm 0660 (Debian's udev default; none applied it here)")


def accelerator() -> str:
    """libvirt's domain type: "kvm" where the CPU offers hardware virtualisation, else "qemu" (TCG)."""
    chosen = os.environ.get("DEPLOYER_VM_DRIVER")
    if chosen:
        if chosen not in ("kvm", "qemu"):
            raise InputError(f"DEPLOYER_VM_DRIVER must be kvm or qemu, not {chosen!r}")
        return chosen
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "qemu"
    usable = os.access("/dev/kvm", os.R_OK | os.W_OK)
    return "kvm" if usable and re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.M) else "qemu"


def box_stamp() -> str:
    """Which build of the box: the digest of the script that builds it."""
    return hashlib.sha256(BUILD_SCRIPT.read_bytes()).hexdigest()[:16]


def _vagrant_home() -> Path:
    return Path(os.environ.get("VAGRANT_HOME") or Path.home() / ".vagrant.d")


def _added_box_stamp() -> str | None:
    folder = _vagrant_home() / "boxes" / BOX_NAME.replace("/", "-VAGRANTSLASH-")
    for vagrantfile in folder.glob("*/libvirt/Vagrantfile"):
        found = re.search(r"^# build: (\w+)$", vagrantfile.read_text(), re.M)
        if found:
            return found.group(1)
    return None


def ensure_box(log_file: Path) -> None:
    """The box built (cached) and added to Vagrant, and its kernel and initrd where QEMU can read them."""
    stamp = box_stamp()
    cache = cache_dir()
    built = cache / "bookworm.box"
    stamp_file = cache / "bookworm.stamp"
    current = stamp_file.read_text().strip() if stamp_file.exists() else None
    if current != stamp or not all((cache / name).exists() for name in ("bookworm.box", "vmlinuz", "initrd")):
        _log(f"building the box {BOX_NAME} from Debian's packages into {cache} (about a minute)")
        _logged(["sh", str(BUILD_SCRIPT), str(cache)], log_file, "building the box")
        _stamp_box(built, stamp)
        stamp_file.write_text(stamp + "\n")
    BOOT_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("vmlinuz", "initrd"):
        target = BOOT_DIR / f"deployer-bookworm-{name}"
        shutil.copyfile(cache / name, target)
        target.chmod(0o644)
    if _added_box_stamp() != stamp:
        if _machines_exist():
            # their disks are overlays on the added box's volume: replacing it would break them
            _log(f"the box {BOX_NAME} was rebuilt; the running VMs keep the old one until `{command('vm-fleet-down')}`")
            return
        _log(f"adding the box {BOX_NAME} to Vagrant")
        _logged(["vagrant", "box", "add", "--force", "--name", BOX_NAME, str(built)], log_file, "vagrant box add")
        _forget_box_volumes()


def _machines() -> set[str]:
    """The fleet's VMs that exist (Vagrant keeps each one's libvirt id until it is destroyed)."""
    return {path.parent.parent.name for path in (VAGRANT_DIR / ".vagrant" / "machines").glob("*/libvirt/id")}


def _machines_exist() -> bool:
    return bool(_machines())


def _known_ids() -> set[str]:
    """The libvirt ids (uuids) of this checkout's VMs, as Vagrant keeps them."""
    ids = {path.read_text().strip() for path in (VAGRANT_DIR / ".vagrant" / "machines").glob("*/libvirt/id")}
    return ids - {""}


def clear_orphans() -> list[str]:
    """Remove the fleet's VMs that a killed run of another checkout left defined and shut off.

    vagrant-libvirt names a VM `<folder>_<name>` (`vagrant_web1`); a run killed before `vagrant destroy`
    (a session that ended, CI cancelled) leaves it defined, and the next `vagrant up` from a fresh clone
    then fails with "Name `vagrant_web1` of domain about to create is already taken". A shut-off VM of
    that name this checkout does not know is such a leftover: it and its own disk go (the box stays).
    One that runs belongs to a fleet that is up elsewhere: refused, never touched.
    """
    pattern = re.compile(rf"{re.escape(VAGRANT_DIR.name)}_web[0-9]+")
    ours = _known_ids()
    removed: list[str] = []
    for name in _virsh("list", "--all", "--name").stdout.split():
        if not pattern.fullmatch(name) or _virsh("domuuid", name, check=False).stdout.strip() in ours:
            continue
        state = _virsh("domstate", name, check=False).stdout.strip()
        if state != "shut off":
            raise FleetError(
                f"a VM named {name} is {state or 'in an unknown state'} but belongs to no fleet of this "
                f"checkout: another VM fleet is up on this machine (they share the 192.168.56.0/24 network); "
                f"take it down from its own checkout (`{command('vm-fleet-down')}`) first"
            )
        _virsh("undefine", "--remove-all-storage", name)
        removed.append(name)
    return removed


def _stamp_box(box: Path, stamp: str) -> None:
    """Write the build stamp into the box's own Vagrantfile (read back from Vagrant's box folder)."""
    work = box.parent / "stamp.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        subprocess.run(["tar", "-xf", str(box), "-C", str(work)], check=True)
        with open(work / "Vagrantfile", "a") as handle:
            handle.write(f"# build: {stamp}\n")
        subprocess.run(["tar", "-cf", str(box), "-C", str(work), "metadata.json", "Vagrantfile", "box.img"], check=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _forget_box_volumes() -> None:
    """Delete libvirt's copies of an earlier box (vagrant-libvirt would reuse a volume by its name)."""
    prefix = BOX_NAME.replace("/", "-VAGRANTSLASH-") + "_vagrant_box_image_"
    listed = _virsh("vol-list", "default", check=False)
    for line in listed.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(prefix):
            _virsh("vol-delete", "--pool", "default", name, check=False)


def _logged(command: list[str], log_file: Path, what: str, env: dict[str, str] | None = None) -> None:
    with open(log_file, "a") as log:
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=VAGRANT_DIR, check=False)
    if done.returncode != 0:
        tail = Path(log_file).read_text(errors="replace").splitlines()[-15:]
        raise FleetError(f"{what} failed (exit {done.returncode}); the end of {log_file}:\n" + "\n".join(tail))


def vagrant_env(settings: VmFleetSettings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DEPLOYER_VMS=str(settings.vms),
        DEPLOYER_VM_MEMORY=str(settings.memory_mb),
        DEPLOYER_VM_DRIVER=accelerator(),
        DEPLOYER_VM_CONSOLE_DIR=str(console_dir()),
        VAGRANT_DEFAULT_PROVIDER="libvirt",
    )
    return env


def up(settings: VmFleetSettings, log_file: Path) -> None:
    """Set up libvirt and the box if needed, then `vagrant up` the fleet (already running VMs stay as they are)."""
    settings.check()
    missing = missing_tools()
    if missing:
        raise FleetError(
            f"this machine lacks {', '.join(missing)}: on Debian `./dev.sh setup` installs them "
            "(vagrant vagrant-libvirt libvirt-daemon-system qemu-system-x86 qemu-utils mmdebstrap ...)"
        )
    if os.geteuid() != 0:
        raise FleetError("vm-fleet-up runs as root here (it starts libvirt and builds a disk image)")
    extra = sorted(_machines() - {f"web{n}" for n in range(1, settings.vms + 1)})
    if extra:
        raise FleetError(
            f"the fleet already has {', '.join(extra)} beyond --vms {settings.vms}: "
            f"`{command('vm-fleet-down')}` first, or ask for that many"
        )
    log_file.parent.mkdir(parents=True, exist_ok=True)
    ensure_libvirt()
    ensure_box(log_file)
    for name in clear_orphans():
        _log(f"removed the VM {name}, left shut off by a run that was killed before taking its fleet down")
    console_dir().mkdir(exist_ok=True)
    env = vagrant_env(settings)
    kind = "KVM" if env["DEPLOYER_VM_DRIVER"] == "kvm" else "QEMU without KVM (TCG): a minute or more per VM pair"
    _log(f"starting {settings.vms} VMs with {kind}; vagrant's output: {log_file}")
    _logged(["vagrant", "up", "--provider", "libvirt"], log_file, "vagrant up", env)


def down(log_file: Path) -> None:
    """Destroy the fleet's VMs and stop the libvirt daemons this module started (by their pid files)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    if _machines_exist() and shutil.which("vagrant"):
        if not _libvirt_answers() and any((RUN_DIR / f"{d}.pid").exists() for d in ("libvirtd", "virtlogd")):
            ensure_libvirt()
        _log("destroying the VMs (vagrant destroy -f)")
        # no settings in the environment: the Vagrantfile reads those the fleet was brought up with,
        # so it names every VM that exists
        _logged(["vagrant", "destroy", "-f"], log_file, "vagrant destroy")
    if _libvirt_answers() and not _virsh("list", "--all", "--name", check=False).stdout.strip():
        # the networks vagrant-libvirt made, once no VM at all is left that could use them
        for network in ("vagrant-libvirt", "vagrant0"):
            _virsh("net-destroy", network, check=False)
            _virsh("net-undefine", network, check=False)
    for daemon in ("libvirtd", "virtlogd"):
        stop_daemon(RUN_DIR / f"{daemon}.pid")


def stop_daemon(pid_file: Path) -> None:
    pid = _pid_of(pid_file)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while _pid_of(pid_file) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        if _pid_of(pid_file) is not None:
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        pid_file.unlink()
