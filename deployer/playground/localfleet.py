"""A local fleet of real OpenSSH servers on one Linux machine, for development, tests and demos.

Each host is one `sshd` in its own mount and UTS namespaces (`unshare --mount --uts`): its own
loopback address (127.0.X.N), host key, hostname and `/srv` (a bind mount of the host's folder).
Logins are as the non-root user `deploy` with a generated key; a known_hosts file and an
inventory are written next to them. Only processes this module started are ever stopped: each
host's sshd pid is recorded, checked against its command line, and stopped with everything
running inside that host's mount namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from deployer.errors import FleetError
from deployer.playground.deploy_user import DEPLOY_USER, authorize, ensure_deploy_user, run_command
from deployer.playground.userlands import ROOT as USERLAND_ROOT
from deployer.playground.userlands import discard as discard_userland
from deployer.playground.userlands import prepare as prepare_userland
from deployer.playground.userlands import setup_script as userland_setup

SSHD = "/usr/sbin/sshd"
DEFAULT_PORT = 2222


@dataclass(frozen=True)
class LocalHost:
    name: str
    address: str
    port: int
    root: str  # this host's folder on the machine; its srv/ is the host's /srv
    userland: str = "gnu"  # what the deploy user's session sees (deployer/userlands.py)

    @property
    def srv(self) -> str:
        return os.path.join(self.root, "srv")

    @property
    def config(self) -> str:
        return os.path.join(self.root, "sshd_config")

    @property
    def log(self) -> str:
        return os.path.join(self.root, "sshd.log")

    @property
    def pid_file(self) -> str:
        return os.path.join(self.root, "sshd.pid")


def ensure_prerequisites() -> None:
    """Root, unshare, openssh-server (installed when missing) and the deploy user."""
    if os.geteuid() != 0:
        raise FleetError("the local fleet needs root (namespaces, bind mounts, sshd)")
    if shutil.which("unshare") is None:
        raise FleetError("unshare (util-linux) is not installed")
    if not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "openssh-server"]):
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise FleetError(f"installing openssh-server failed: {done.stderr.strip()[-500:]}")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    os.makedirs("/srv", exist_ok=True)
    ensure_deploy_user()


def host_address(subnet: str, index: int) -> str:
    """127.X.Y.N addresses for host `index` (1-based), 250 hosts per /24."""
    parts = subnet.split(".")
    if len(parts) != 3 or parts[0] != "127" or not all(p.isdigit() and int(p) < 256 for p in parts):
        raise FleetError(f"subnet must look like 127.X.Y, got {subnet!r}")
    third = int(parts[2]) + (index - 1) // 250
    if third > 255:
        raise FleetError("too many hosts for this subnet")
    return f"127.{parts[1]}.{third}.{(index - 1) % 250 + 1}"


SSHD_CONFIG = """\
ListenAddress {address}:{port}
HostKey {host_key}
PidFile none
AuthorizedKeysFile .ssh/authorized_keys
AllowUsers {user}
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
MaxStartups 200:30:400
MaxSessions 64
ClientAliveInterval 30
LogLevel {log_level}
Subsystem sftp internal-sftp
"""


class LocalFleet:
    """A fleet of local sshd hosts rooted at `state_dir` (its keys, hosts and inventory live there)."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = os.path.abspath(state_dir)
        self.identity_file = os.path.join(self.state_dir, "id_ed25519")
        self.known_hosts = os.path.join(self.state_dir, "known_hosts")
        self.inventory_path = os.path.join(self.state_dir, "inventory.yml")
        self.manifest = os.path.join(self.state_dir, "fleet.json")
        self.userland_dir = USERLAND_ROOT

    # -- lifecycle -----------------------------------------------------------------------
    def up(
        self,
        count: int,
        subnet: str = "127.0.1",
        port: int = DEFAULT_PORT,
        log_level: str = "VERBOSE",
        deploy_to: str = "/srv/app",
        prefix: str = "web",
        userlands: Sequence[str] = ("gnu",),
    ) -> list[LocalHost]:
        """Start `count` hosts (stopping any this fleet already runs) and write inventory + known_hosts.

        Host i gets userlands[i % len(userlands)] (see deployer/userlands.py).
        """
        if count < 1:
            raise FleetError("a fleet needs at least one host")
        if not userlands:
            raise FleetError("no userland given")
        ensure_prerequisites()
        self.down()
        for kind in set(userlands):
            prepare_userland(kind, self.userland_dir, self.state_dir)
        os.makedirs(self.state_dir, exist_ok=True)
        if not os.path.exists(self.identity_file):
            run_command(
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "deployer-local-fleet",
                "-f",
                self.identity_file,
            )
        authorize(Path(self.identity_file + ".pub").read_text())
        hosts = [
            LocalHost(
                f"{prefix}{i}",
                host_address(subnet, i),
                port,
                os.path.join(self.state_dir, "hosts", f"{prefix}{i}"),
                userlands[(i - 1) % len(userlands)],
            )
            for i in range(1, count + 1)
        ]
        self._write_manifest(hosts, log_level)
        known_lines = []
        for host in hosts:
            self._prepare_host(host, log_level)
            public = Path(host.root, "ssh_host_ed25519_key.pub").read_text().split()
            known_lines.append(f"[{host.address}]:{host.port} {public[0]} {public[1]}\n")
        Path(self.known_hosts).write_text("".join(known_lines))
        for host in hosts:
            self.start_host(host.name)
        for host in hosts:
            self.wait_ready(host)
        self._write_inventory(hosts, deploy_to)
        return hosts

    def _prepare_host(self, host: LocalHost, log_level: str) -> None:
        os.makedirs(host.srv, exist_ok=True)
        deploy = pwd.getpwnam(DEPLOY_USER)
        os.chown(host.srv, deploy.pw_uid, deploy.pw_gid)
        key = os.path.join(host.root, "ssh_host_ed25519_key")
        if not os.path.exists(key):
            run_command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", key)
        Path(host.config).write_text(
            SSHD_CONFIG.format(
                address=host.address,
                port=host.port,
                host_key=key,
                user=DEPLOY_USER,
                log_level=log_level,
            )
        )

    def start_host(self, name: str) -> int:
        """Start (or restart) one host's sshd in fresh namespaces; returns its pid."""
        host = self.host(name)
        if self.pid(name) is not None:
            raise FleetError(f"{name} is already running")
        if _listening(host.address, host.port):
            raise FleetError(f"{host.address}:{host.port} is already in use by a process this fleet did not start")
        setup = userland_setup(host.userland, self.userland_dir, self.state_dir)
        script = f'mount --bind "$1" /srv && hostname "$2" && {setup} && exec "$3" -D -f "$4" -E "$5"'
        with open(host.log, "ab") as log:
            process = subprocess.Popen(
                [
                    "unshare",
                    "--mount",
                    "--uts",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    script,
                    "deployer-fleet",
                    host.srv,
                    host.name,
                    SSHD,
                    host.config,
                    host.log,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        Path(host.pid_file).write_text(str(process.pid))
        return process.pid

    def wait_ready(self, host: LocalHost, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((host.address, host.port), timeout=1) as sock:
                    if sock.recv(4).startswith(b"SSH-") and self.pid(host.name) is not None:
                        return
            except OSError:
                pass
            if self.pid(host.name) is None:
                break
            time.sleep(0.05)
        tail = Path(host.log).read_text(errors="replace")[-800:] if os.path.exists(host.log) else ""
        raise FleetError(f"{host.name} ({host.address}:{host.port}) did not start: {tail}")

    def pid(self, name: str) -> int | None:
        """The pid of this fleet's sshd for `name`, if it is running (checked against /proc)."""
        host = self.host(name)
        try:
            pid = int(Path(host.pid_file).read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        if _process_state(pid) in ("", "Z"):
            _reap(pid)
            return None
        # Empty while the process is inside execve (sh -> sshd); sshd later rewrites its title
        # ("sshd: /usr/sbin/sshd -D -f CONFIG ..."), so match the config path in the raw bytes.
        if cmdline and host.config.encode() not in cmdline:
            return None
        return pid

    def stop_host(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop one host: its sshd and every process inside its mount namespace."""
        pid = self.pid(name)
        if pid is None:
            return
        try:
            namespace = os.readlink(f"/proc/{pid}/ns/mnt")
        except OSError:
            namespace = ""
        if namespace == os.readlink("/proc/self/ns/mnt"):
            namespace = ""  # not yet inside its own namespace: never sweep the machine's
        os.kill(pid, sig)
        if namespace:
            for other in _pids_in_namespace(namespace):
                if other != pid:
                    _kill(other, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.pid(name) is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.pid(name) is not None:
            _kill(pid, signal.SIGKILL)
        _reap(pid)
        Path(self.host(name).pid_file).unlink(missing_ok=True)

    def pause_host(self, name: str) -> None:
        """Freeze a host's sshd (SIGSTOP): it accepts TCP but never answers, like a hung machine."""
        pid = self.pid(name)
        if pid is not None:
            os.kill(pid, signal.SIGSTOP)

    def resume_host(self, name: str) -> None:
        pid = self.pid(name)
        if pid is not None:
            os.kill(pid, signal.SIGCONT)

    def ssh_counts(self) -> dict[str, tuple[int, int]]:
        """(connections accepted, exec sessions started) per host so far, counted from each sshd's own log.

        sshd logs both at LogLevel VERBOSE (the fleet's default): "Accepted publickey for ..." and
        "Starting session: command for ...". Independent of the deployer's own counters.
        """
        counts = {}
        for host in self.hosts():
            try:
                text = Path(host.log).read_text(errors="replace")
            except OSError:
                text = ""
            counts[host.name] = (text.count("Accepted publickey for "), text.count("Starting session: "))
        return counts

    def freeze_host(self, name: str, sig: int = signal.SIGSTOP) -> None:
        """Freeze every process of a host (its sshd and all sessions): a machine that stopped mid-command.

        SIGCONT thaws it (`thaw_host`)."""
        pid = self.pid(name)
        if pid is None:
            return
        namespace = os.readlink(f"/proc/{pid}/ns/mnt")
        if namespace == os.readlink("/proc/self/ns/mnt"):
            raise FleetError(f"{name} is not inside its own namespace; refusing to signal the machine's processes")
        for other in _pids_in_namespace(namespace):
            _kill(other, sig)

    def thaw_host(self, name: str) -> None:
        self.freeze_host(name, signal.SIGCONT)

    def down(self) -> list[str]:
        """Stop every host this fleet started; returns their names."""
        stopped = []
        for host in self.hosts():
            if self.pid(host.name) is not None:
                self.resume_host(host.name)
                self.stop_host(host.name)
                stopped.append(host.name)
        discard_userland(self.userland_dir, self.state_dir)
        return stopped

    # -- description ---------------------------------------------------------------------
    def _write_manifest(self, hosts: list[LocalHost], log_level: str) -> None:
        data = {"hosts": [asdict(host) for host in hosts], "log_level": log_level}
        Path(self.manifest).write_text(json.dumps(data, indent=2))

    def hosts(self) -> list[LocalHost]:
        try:
            data = json.loads(Path(self.manifest).read_text())
        except (OSError, ValueError):
            return []
        return [LocalHost(**entry) for entry in data.get("hosts", [])]

    def host(self, name: str) -> LocalHost:
        for host in self.hosts():
            if host.name == name:
                return host
        raise FleetError(f"no host {name!r} in the fleet at {self.state_dir}")

    def _write_inventory(self, hosts: list[LocalHost], deploy_to: str) -> None:
        lines = [
            "# Written by `inv fleet-up`: the local fleet of real sshd hosts.",
            f"deploy_to: {json.dumps(deploy_to)}",
            f"user: {DEPLOY_USER}",
            "ssh:",
            f"  identity_file: {json.dumps(self.identity_file)}",
            f"  known_hosts: {json.dumps(self.known_hosts)}",
            "hosts:",
        ]
        lines += [f"  {h.name}: {{address: {h.address}, port: {h.port}}}" for h in hosts]
        Path(self.inventory_path).write_text("\n".join(lines) + "\n")

    def ssh_command(self, name: str, *remote: str) -> list[str]:
        """An OpenSSH client command line for `name`, with strict host key checking."""
        host = self.host(name)
        return [
            "ssh",
            "-q",
            "-i",
            self.identity_file,
            "-p",
            str(host.port),
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            f"{DEPLOY_USER}@{host.address}",
            *remote,
        ]


def _listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def _pids_in_namespace(namespace: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/mnt") == namespace:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _process_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _reap(pid: int) -> None:
    """Collect the exit status of a host we started in this process (no-op otherwise)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
