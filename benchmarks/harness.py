"""What the benchmarks are made of: samples and their table, the tool run as a user runs it, the
plain OpenSSH fan-out it is compared with, TCP proxies that add latency and count bytes, an nginx
origin for pull deploys, CPU used by the controller and by the hosts' sshd. The runs themselves are
in benchmarks/bench.py."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import paramiko  # noqa: E402

from deployer.playground.deploy_user import DEPLOY_USER  # noqa: E402
from deployer.playground.localfleet import LocalFleet  # noqa: E402
from deployer.release import pack_directory  # noqa: E402

TOOL_DIR = "/srv/bench-tool"
SSH_DIR = "/srv/bench-ssh"


@dataclass
class Sample:
    seconds: float
    cpu: float  # client CPU seconds (user + system of the child processes)
    connections: float  # per host, from sshd logs
    sessions: float
    host_cpu: float = 0.0  # CPU seconds of all hosts' sshd children (connections, sessions, the scripts)
    sent: float = 0.0  # bytes this machine sent the hosts' sshd, per host (the kernel's count, headers included)


@dataclass
class Row:
    hosts: int
    operation: str
    tool: list[Sample] = field(default_factory=list)
    ssh: list[Sample] = field(default_factory=list)
    sent_per_host: dict[str, float] = field(default_factory=dict)  # pull rows: controller bytes per host


def ratio(row: Row) -> float:
    return median(row.tool, "seconds") / median(row.ssh, "seconds")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def hosts_cpu(fleet: LocalFleet) -> float:
    """CPU seconds used so far by the fleet's hosts: each host's sshd listener and everything it
    forked since it joined the fleet's cgroup (every connection's sshd, its sessions and what they
    ran), counted by the kernel's CPU accounting in nanoseconds. Not the listeners' reaped-children
    times (`cutime`), used until 2026-12-07: a connection whose client sends a DISCONNECT (OpenSSH's
    `ssh` does, paramiko does not) ends sshd's session process on a path where its monitor exits
    without waiting for it, so that process is reaped by init and its CPU never reaches the
    listener. The OpenSSH fan-out's hosts' CPU was undercounted that way (its whole sshd receiving
    an upload), the tool's was not."""
    return cpu_group(fleet).read()


def settled(fleet: LocalFleet, before: float) -> float:
    """The hosts' CPU since `before`, once it has stopped growing (the connection's last processes
    exit a little after the client has closed)."""
    deadline = time.monotonic() + 5
    used = hosts_cpu(fleet) - before
    while time.monotonic() < deadline:
        time.sleep(0.1)
        again = hosts_cpu(fleet) - before
        if again == used and used > 0:
            return used
        used = again
    return used


def paramiko_client(fleet: LocalFleet, disabled: dict[str, list[str]] | None = None) -> paramiko.SSHClient:
    """A paramiko connection to the fleet's only host as the deploy user (the tool's own library)."""
    (host,) = fleet.hosts()
    client = paramiko.SSHClient()
    client.load_host_keys(fleet.known_hosts)
    client.connect(
        host.address,
        port=host.port,
        username=DEPLOY_USER,
        key_filename=fleet.identity_file,
        allow_agent=False,
        look_for_keys=False,
        disabled_algorithms=disabled or {},
    )
    return client


class CpuGroup:
    """One cgroup (cgroup v1 `cpuacct`, else cgroup v2) holding a fleet's sshd listeners, so that
    what they fork is counted even after it is orphaned. Listeners started since (a host brought
    back up) are moved in at every read; the group is removed when the benchmark exits."""

    def __init__(self, fleet: LocalFleet) -> None:
        self.fleet = fleet
        v1 = Path("/sys/fs/cgroup/cpuacct")
        if (v1 / "cpuacct.usage").exists():
            self.root, self.usage = v1, "cpuacct.usage"
        else:
            mounts = Path("/proc/mounts").read_text().splitlines()
            unified = next((Path(line.split()[1]) for line in mounts if " cgroup2 " in line), None)
            if unified is None:
                raise RuntimeError("no cgroup hierarchy to count the hosts' CPU in (cpuacct or cgroup2)")
            self.root, self.usage = unified, "cpu.stat"
        self.path = self.root / f"deployer-bench-{os.getpid()}-{len(CPU_GROUPS)}"
        self.path.mkdir()

    def read(self) -> float:
        for host in self.fleet.hosts():
            pid = self.fleet.pid(host.name)
            if pid is not None:
                with contextlib.suppress(OSError):  # gone since
                    (self.path / "cgroup.procs").write_text(str(pid))
        text = (self.path / self.usage).read_text()
        if self.usage == "cpuacct.usage":
            return int(text) / 1e9
        fields = dict(line.split() for line in text.splitlines())
        return int(fields["usage_usec"]) / 1e6

    def remove(self) -> None:
        """Moves what is left in the group out (processes of a stopped fleet may still be exiting),
        then removes it; asks again for up to 3 s while the kernel still counts an exiting one."""
        deadline = time.monotonic() + 3
        while True:
            with contextlib.suppress(OSError):
                for pid in (self.path / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        (self.root / "cgroup.procs").write_text(pid)
                self.path.rmdir()
                return
            if not self.path.exists():
                return
            if time.monotonic() > deadline:
                print(f"could not remove the cgroup {self.path}: rmdir it once its processes are gone", file=sys.stderr)
                return
            time.sleep(0.1)


CPU_GROUPS: dict[str, CpuGroup] = {}  # by fleet state folder; removed when the benchmark exits


def cpu_group(fleet: LocalFleet) -> CpuGroup:
    if fleet.state_dir not in CPU_GROUPS:
        CPU_GROUPS[fleet.state_dir] = CpuGroup(fleet)
    return CPU_GROUPS[fleet.state_dir]


@atexit.register
def _remove_cpu_groups() -> None:
    for group in CPU_GROUPS.values():
        group.remove()
    CPU_GROUPS.clear()


class WireCounter:
    """What this machine sends the fleet's sshd, counted by the kernel: one iptables rule matching
    the hosts' address range and port that only counts (into an empty chain of its own). Whoever
    sends (the tool, `ssh`, a latency proxy's leg to the host) is counted alike, once."""

    def __init__(self, fleet: LocalFleet) -> None:
        hosts = fleet.hosts()
        addresses = sorted(hosts, key=lambda host: tuple(int(part) for part in host.address.split(".")))
        self.chain = f"bench-sent-{os.getpid()}-{len(COUNTERS)}"
        self.rule = [
            "-m", "iprange", "--dst-range", f"{addresses[0].address}-{addresses[-1].address}",
            "-p", "tcp", "--dport", str(hosts[0].port), "-j", self.chain,
        ]  # fmt: skip
        subprocess.run(["iptables", "-N", self.chain], check=True)
        subprocess.run(["iptables", "-I", "OUTPUT", *self.rule], check=True)

    def read(self) -> int:
        listed = subprocess.run(
            ["iptables", "-L", "OUTPUT", "-v", "-x", "-n"], capture_output=True, text=True, check=True
        )
        for line in listed.stdout.splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[2] == self.chain:
                return int(fields[1])
        raise RuntimeError(f"the counting rule {self.chain} is gone")

    def remove(self) -> None:
        subprocess.run(["iptables", "-D", "OUTPUT", *self.rule], capture_output=True)
        subprocess.run(["iptables", "-X", self.chain], capture_output=True)


COUNTERS: dict[str, WireCounter] = {}  # by fleet state folder; removed when the benchmark exits


@atexit.register
def _remove_counters() -> None:
    for counter in COUNTERS.values():
        counter.remove()
    COUNTERS.clear()


def wire_counter(fleet: LocalFleet) -> WireCounter:
    if fleet.state_dir not in COUNTERS:
        COUNTERS[fleet.state_dir] = WireCounter(fleet)
    return COUNTERS[fleet.state_dir]


def measured(fleet: LocalFleet, hosts: int, action) -> Sample:  # type: ignore[no-untyped-def]
    counter = wire_counter(fleet)
    before_counts = fleet.ssh_counts()
    before_hosts = hosts_cpu(fleet)
    before_sent = counter.read()
    cpu = children_cpu()
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    cpu = children_cpu() - cpu
    time.sleep(0.2)  # let every sshd child finish writing its log lines
    after_counts = fleet.ssh_counts()
    connections = sum(after_counts[n][0] - before_counts[n][0] for n in after_counts) / hosts
    sessions = sum(after_counts[n][1] - before_counts[n][1] for n in after_counts) / hosts
    sent = (counter.read() - before_sent) / hosts
    return Sample(seconds, cpu, connections, sessions, hosts_cpu(fleet) - before_hosts, sent)


# --- the tool ---


PEAKS: dict[tuple[int, str], list[list[int]]] = {}  # (hosts, kind) -> [peak RSS KB, threads, fds] per run


def tool(*args: str, hosts: int, kind: str = "") -> None:
    """The CLI, as a user runs it on `hosts` hosts; its peak memory, threads and open files are
    sampled from /proc and kept under (hosts, `kind`, by default the operation)."""
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen([sys.executable, "-m", "invoke", *args], cwd=REPO, stdout=out, stderr=out)
        peak = [0, 0, 0]
        deadline = time.monotonic() + 900
        while process.poll() is None:
            try:
                status = Path(f"/proc/{process.pid}/status").read_text()
                fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
                files = len(os.listdir(f"/proc/{process.pid}/fd"))
                sample = [int(fields["VmRSS"].split()[0]), int(fields["Threads"]), files]
                peak = [max(a, b) for a, b in zip(peak, sample, strict=True)]
            except (OSError, KeyError, ValueError):
                pass
            if time.monotonic() > deadline:
                process.kill()
            # waiting, not sleeping: the run's end is seen the moment it comes (a sleep of 0.1 s
            # added 0 to 0.1 s, 50 ms on average, to every time the tool was measured at)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.1)
        PEAKS.setdefault((hosts, kind or args[0]), []).append(peak)
        if process.returncode != 0:
            out.seek(0)
            raise SystemExit(f"tool failed: {' '.join(args)}\n{out.read().decode(errors='replace')}")


# --- a controller uplink of limited bandwidth ---


@contextlib.contextmanager
def shaped_uplink(mbit: float, subnet: str = "127.0.5") -> Iterator[None]:
    """Everything this machine sends to the hosts' sshd (`subnet`.0/24, port 2222) shares one
    `mbit` Mbit/s link, as a controller's uplink would: an HTB class on the loopback device for
    those packets only, so an HTTP origin on another address or port (pull deploys) stays
    unshaped, as an object store or CDN scales. Loopback had no qdisc before; it has none after."""
    shown = subprocess.run(["tc", "qdisc", "show", "dev", "lo"], capture_output=True, text=True, check=True).stdout
    if "htb" in shown:
        raise SystemExit(f"loopback already has an HTB qdisc (another benchmark?): {shown.strip()}")
    commands = [
        ["tc", "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "r2q", "1000"],
        ["tc", "class", "add", "dev", "lo", "parent", "1:", "classid", "1:1", "htb", "rate", f"{mbit:g}mbit",
         "burst", "256k", "cburst", "256k"],
        ["tc", "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "u32",
         "match", "ip", "dst", f"{subnet}.0/24", "match", "ip", "dport", "2222", "0xffff", "flowid", "1:1"],
    ]  # fmt: skip
    try:
        for command in commands:
            subprocess.run(command, check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], capture_output=True)


# --- the plain OpenSSH fan-out ---


def ssh_base(fleet_key: str, known_hosts: str) -> list[str]:
    return [
        "ssh",
        "-i", fleet_key,
        "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes",
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "ControlMaster=no",
        "-o", "ControlPath=none",
    ]  # fmt: skip


def fan_out(endpoints: list[tuple[str, int]], base: list[str], command: str, stdin_path: str | None) -> None:
    processes = []
    for address, port in endpoints:
        stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
        processes.append(
            (
                subprocess.Popen([*base, "-p", str(port), f"deploy@{address}", command], stdin=stdin),
                stdin,
            )
        )
    failed = 0
    for process, stdin in processes:
        failed += process.wait(timeout=900) != 0
        if stdin is not subprocess.DEVNULL:
            stdin.close()  # type: ignore[union-attr]
    if failed:
        raise SystemExit(f"OpenSSH fan-out: {failed} host(s) failed: {command}")


def ssh_deploy_command(release: str) -> str:
    d = SSH_DIR
    return (
        f"set -e; mkdir -p {d}/releases/{release}; tar -xzf - -C {d}/releases/{release}; "
        f"if [ -L {d}/current ]; then readlink {d}/current > {d}/releases/{release}/previousVersion; fi; "
        f"ln -s releases/{release} {d}/.current.tmp && mv -T {d}/.current.tmp {d}/current"
    )


def ssh_rollback_command(release: str) -> str:
    d = SSH_DIR
    return f"set -e; ln -s releases/{release} {d}/.current.tmp && mv -T {d}/.current.tmp {d}/current"


# --- latency proxy ---


def proxy_main(pairs: list[tuple[str, int, str, int]], delay: float, sent=None) -> None:  # type: ignore[no-untyped-def]
    """Forward each listen address to its host, delaying every chunk by `delay` in each direction;
    `sent` (a shared array, one slot per pair) counts the bytes sent towards each host."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slot: int = -1) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def pump() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            writer.close()

        task = asyncio.create_task(pump())
        try:
            while data := await reader.read(65536):
                if slot >= 0 and sent is not None:
                    sent[slot] += len(data)
                queue.put_nowait((time.monotonic() + delay, data))
        finally:
            queue.put_nowait((0.0, b""))
            await task

    def handler(target: tuple[str, int], slot: int):  # type: ignore[no-untyped-def]
        async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
            try:
                server_reader, server_writer = await asyncio.open_connection(*target)
            except OSError:
                client_writer.close()
                return
            await asyncio.gather(
                pipe(client_reader, server_writer, slot), pipe(server_reader, client_writer), return_exceptions=True
            )

        return handle

    async def main() -> None:
        servers = [
            await asyncio.start_server(handler((h, p), slot), la, lp) for slot, (la, lp, h, p) in enumerate(pairs)
        ]
        await asyncio.gather(*(server.serve_forever() for server in servers))

    asyncio.run(main())


def start_proxies(
    fleet: LocalFleet,
    delay_ms: float,
    state: str,
    sent=None,  # type: ignore[no-untyped-def]
    port_offset: int = 0,
) -> tuple[multiprocessing.Process, str, str]:
    """Start the proxies (listening on port + `port_offset`, so two can front the same hosts);
    returns the process, an inventory and a known_hosts pointing at them."""
    hosts = fleet.hosts()
    pairs = []
    known = []
    lines = Path(fleet.inventory_path).read_text().splitlines()
    host_keys = {
        line.split()[0]: line.split(maxsplit=1)[1] for line in Path(fleet.known_hosts).read_text().splitlines()
    }
    for index, host in enumerate(hosts):
        listen, port = host.address.replace("127.0.5.", "127.0.7."), host.port + port_offset
        pairs.append((listen, port, host.address, host.port))
        known.append(f"[{listen}]:{port} {host_keys[f'[{host.address}]:{host.port}']}")
        old, new = f"address: {host.address}, port: {host.port}}}", f"address: {listen}, port: {port}}}"
        lines = [line.replace(old, new) for line in lines]
        del index
    known_hosts = os.path.join(state, "proxy_known_hosts")
    Path(known_hosts).write_text("\n".join(known) + "\n")
    inventory = os.path.join(state, "proxy_inventory.yml")
    text = "\n".join(lines).replace(f'known_hosts: "{fleet.known_hosts}"', f'known_hosts: "{known_hosts}"')
    Path(inventory).write_text(text + "\n")
    process = multiprocessing.Process(target=proxy_main, args=(pairs, delay_ms / 1000, sent), daemon=True)
    process.start()
    time.sleep(0.5)
    return process, inventory, known_hosts


# --- the run ---


def make_artifacts(folder: str, count: int, megabytes: float) -> list[str]:
    paths = []
    for index in range(count):
        tree = os.path.join(folder, f"app{index}")
        os.makedirs(os.path.join(tree, "public"))
        Path(tree, "VERSION").write_text(f"bench-{index}\n")
        Path(tree, "public", "index.html").write_text("<h1>bench</h1>\n")
        Path(tree, "public", "assets.bin").write_bytes(os.urandom(int(megabytes * 1024 * 1024)))
        path = os.path.join(folder, f"app{index}.tar.gz")
        pack_directory(tree, path)
        paths.append(path)
    return paths


def start_nginx(folder: str) -> tuple[subprocess.Popen[bytes], str]:
    """Debian's nginx serving `folder` on 127.0.8.1 (the origin pull deploys fetch from)."""
    conf = os.path.join(folder, "nginx.conf")
    Path(conf).write_text(
        f"daemon off; user root; worker_processes 2; pid {folder}/nginx.pid; error_log {folder}/error.log;\n"
        f"events {{ worker_connections 1024; }}\n"
        f"http {{ access_log off; sendfile on; server {{ listen 127.0.8.1:8080; root {folder}/files; }} }}\n"
    )
    process = subprocess.Popen(["/usr/sbin/nginx", "-c", conf, "-p", folder])
    time.sleep(0.5)
    return process, "http://127.0.8.1:8080"


def median(samples: list[Sample], attribute: str) -> float:
    return statistics.median(getattr(sample, attribute) for sample in samples)


def table(rows: list[Row], latency_ms: float) -> str:
    header = (
        "| hosts | operation | tool s | OpenSSH s | tool/OpenSSH | connections/host | sessions/host "
        "| client CPU ms/host (tool) | client CPU ms/host (OpenSSH) | hosts' CPU ms/host (tool) "
        "| hosts' CPU ms/host (OpenSSH) | sent KB/host (tool) | sent KB/host (OpenSSH) |"
    )
    lines = [header, "|" + "---|" * 13]
    for row in rows:
        tool_s, ssh_s = median(row.tool, "seconds"), median(row.ssh, "seconds")
        lines.append(
            f"| {row.hosts} | {row.operation}{f' (+{latency_ms:g} ms each way)' if latency_ms else ''} "
            f"| {tool_s:.2f} | {ssh_s:.2f} | {tool_s / ssh_s:.2f} "
            f"| {median(row.tool, 'connections'):.1f} (OpenSSH {median(row.ssh, 'connections'):.1f}) "
            f"| {median(row.tool, 'sessions'):.1f} (OpenSSH {median(row.ssh, 'sessions'):.1f}) "
            f"| {median(row.tool, 'cpu') * 1000 / row.hosts:.1f} | {median(row.ssh, 'cpu') * 1000 / row.hosts:.1f} "
            f"| {median(row.tool, 'host_cpu') * 1000 / row.hosts:.1f} "
            f"| {median(row.ssh, 'host_cpu') * 1000 / row.hosts:.1f} "
            f"| {median(row.tool, 'sent') / 1024:.1f} | {median(row.ssh, 'sent') / 1024:.1f} |"
        )
    return "\n".join(lines)


def machine() -> str:
    cpus = os.cpu_count()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    return (
        f"{platform.node()}: {cpus} CPUs, {memory:.0f} GiB, {platform.platform()}, Python {platform.python_version()}, "
        f"{ssh_version}"
    )
