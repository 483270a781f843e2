"""Benchmark: the deployer against a plain OpenSSH fan-out, on local fleets of real sshd hosts.

For each fleet size it starts a local fleet, then runs, interleaved and alternating which goes
first: the tool (`inv deploy` / `inv rollback`, the whole CLI as a user runs it) and a plain
OpenSSH fan-out written here (one `ssh` per host, all in parallel: stream the tarball into `tar`,
switch with `ln -s tmp && mv -T`; roll back with `ln -s && mv -T`). Connections and exec sessions
per host are counted from each sshd's own log; client CPU is the children's rusage.

    .venv/bin/python benchmarks/bench.py                     # 20, 50, 100 hosts
    .venv/bin/python benchmarks/bench.py --hosts 20 --runs 3 --latency-ms 25

`--latency-ms` puts a TCP proxy in front of every host that delays each direction by that much,
to show that round trips, not loopback speed, are what is saved.

    .venv/bin/python benchmarks/bench.py --pull --hosts 50 --artifact-mb 50 --runs 3

    .venv/bin/python benchmarks/bench.py --round-trips --runs 5 --latency-ms 100

    .venv/bin/python benchmarks/bench.py --targets --runs 3 --out /tmp/targets.md

`--targets` runs every case of issue 18's performance targets (20, 50 and 1,000 hosts, +25 ms,
pull against push) and writes target against measured, then each case's own table.

`--round-trips` counts the round trips each operation waits for on one host: its time with the
delay minus its time without, over one added round trip.

`--pull` compares the tool with itself: a deploy that uploads the artifact to every host (push)
against one where every host fetches it from a local nginx (`--pull URL`), interleaved; the bytes
the controller sends each host over SSH are counted by a pass-through proxy in front of every host.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

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
    """CPU seconds used so far by the children each host's sshd has reaped: every connection's
    sshd, its sessions and what they ran (the /proc/PID/stat cutime and cstime of each listener)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for host in fleet.hosts():
        pid = fleet.pid(host.name)
        if pid is None:
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # gone since
            continue
        total += int(fields[13]) + int(fields[14])  # cutime, cstime (fields 16 and 17 of stat)
    return total / ticks


def measured(fleet: LocalFleet, hosts: int, action) -> Sample:  # type: ignore[no-untyped-def]
    before_counts = fleet.ssh_counts()
    before_hosts = hosts_cpu(fleet)
    cpu = children_cpu()
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    cpu = children_cpu() - cpu
    time.sleep(0.2)  # let every sshd child finish writing its log lines
    after_counts = fleet.ssh_counts()
    connections = sum(after_counts[n][0] - before_counts[n][0] for n in after_counts) / hosts
    sessions = sum(after_counts[n][1] - before_counts[n][1] for n in after_counts) / hosts
    return Sample(seconds, cpu, connections, sessions, hosts_cpu(fleet) - before_hosts)


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
            time.sleep(0.1)
        PEAKS.setdefault((hosts, kind or args[0]), []).append(peak)
        if process.returncode != 0:
            out.seek(0)
            raise SystemExit(f"tool failed: {' '.join(args)}\n{out.read().decode(errors='replace')}")


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


def bench(hosts: int, runs: int, megabytes: float, latency_ms: float) -> list[Row]:
    state = tempfile.mkdtemp(prefix=f"bench-{hosts}-")
    fleet = LocalFleet(state)
    print(f"starting {hosts} sshd hosts ...", file=sys.stderr)
    fleet.up(hosts, subnet="127.0.5", port=2222)
    proxy = None
    try:
        inventory = Path(fleet.inventory_path).read_text().replace('deploy_to: "/srv/app"', f'deploy_to: "{TOOL_DIR}"')
        Path(fleet.inventory_path).write_text(inventory)
        inventory_path, known_hosts = fleet.inventory_path, fleet.known_hosts
        if latency_ms:
            proxy, inventory_path, known_hosts = start_proxies(fleet, latency_ms, state)
        endpoints = []
        for line in Path(inventory_path).read_text().splitlines():
            if "address:" in line:
                address = line.split("address:")[1].split(",")[0].strip()
                endpoints.append((address, 2222))
        base = ssh_base(fleet.identity_file, known_hosts)
        artifacts = make_artifacts(state, runs * 2 + 1, megabytes)

        # Baselines: both sides have a current release before the measured runs.
        tool("deploy", "-i", inventory_path, "--artifact", artifacts[0], hosts=hosts)
        fan_out(endpoints, base, ssh_deploy_command("r0"), artifacts[0])

        deploy, rollback = Row(hosts, f"deploy {megabytes:g} MB"), Row(hosts, "rollback")
        for run in range(runs):
            artifact = artifacts[run + 1]
            release = f"r{run + 1}"
            pairs = [
                (
                    deploy.tool,
                    lambda a=artifact: tool("deploy", "-i", inventory_path, "--artifact", a, "--unpin", hosts=hosts),
                ),
                (deploy.ssh, lambda r=release, a=artifact: fan_out(endpoints, base, ssh_deploy_command(r), a)),
            ]
            for target, action in pairs if run % 2 == 0 else reversed(pairs):
                target.append(measured(fleet, hosts, action))
            previous = "r0" if run == 0 else f"r{run}"
            backs = [
                (rollback.tool, lambda: tool("rollback", "-i", inventory_path, hosts=hosts)),
                (rollback.ssh, lambda p=previous: fan_out(endpoints, base, ssh_rollback_command(p), None)),
            ]
            for target, action in backs if run % 2 == 0 else reversed(backs):
                target.append(measured(fleet, hosts, action))
            # the OpenSSH side goes forward again to the release it just left, so every run switches
            fan_out(endpoints, base, ssh_rollback_command(release), None)
            print(f"  {hosts} hosts: run {run + 1}/{runs} done", file=sys.stderr)
        return [deploy, rollback]
    finally:
        if proxy is not None:
            proxy.terminate()
        fleet.down()
        shutil.rmtree(state, ignore_errors=True)


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


def bench_pull(hosts: int, runs: int, megabytes: float) -> list[Row]:
    """Push (upload to every host) against pull (every host fetches from nginx), both by the tool,
    interleaved; controller bytes per host counted by a pass-through proxy. Row.tool is push,
    Row.ssh is pull (the table's columns say so)."""
    state = tempfile.mkdtemp(prefix=f"bench-pull-{hosts}-")
    fleet = LocalFleet(state)
    print(f"starting {hosts} sshd hosts ...", file=sys.stderr)
    fleet.up(hosts, subnet="127.0.5", port=2222)
    sent = multiprocessing.Array("d", hosts)
    proxy, origin = None, None
    try:
        text = Path(fleet.inventory_path).read_text().replace('deploy_to: "/srv/app"', f'deploy_to: "{TOOL_DIR}"')
        Path(fleet.inventory_path).write_text(text)
        proxy, inventory_path, _known = start_proxies(fleet, 0, state, sent)
        os.makedirs(os.path.join(state, "files"))
        origin, url = start_nginx(state)
        artifacts = make_artifacts(state, runs * 2 + 1, megabytes)
        for path in artifacts:
            os.link(path, os.path.join(state, "files", os.path.basename(path)))
        tool("deploy", "-i", inventory_path, "--artifact", artifacts[0], hosts=hosts, kind="deploy push")
        row = Row(hosts, f"deploy {megabytes:g} MB: push (tool column) vs pull (OpenSSH column)")
        per_host: dict[str, list[float]] = {"push": [], "pull": []}

        def counted(kind: str, action) -> Sample:  # type: ignore[no-untyped-def]
            before = sum(sent[:])
            sample = measured(fleet, hosts, action)
            per_host[kind].append((sum(sent[:]) - before) / hosts)
            return sample

        for run in range(runs):
            push_artifact, pull_artifact = artifacts[2 * run + 1], artifacts[2 * run + 2]
            pull_url = f"{url}/{os.path.basename(pull_artifact)}"
            pairs = [
                (
                    row.tool,
                    "push",
                    lambda a=push_artifact: tool(
                        "deploy", "-i", inventory_path, "--artifact", a, hosts=hosts, kind="deploy push"
                    ),
                ),
                (
                    row.ssh,
                    "pull",
                    lambda a=pull_artifact, u=pull_url: tool(
                        "deploy", "-i", inventory_path, "--artifact", a, "--pull", u, hosts=hosts, kind="deploy pull"
                    ),
                ),
            ]
            for target, kind, action in pairs if run % 2 == 0 else reversed(pairs):
                target.append(counted(kind, action))
            print(f"  {hosts} hosts: run {run + 1}/{runs} done", file=sys.stderr)
        for kind, values in per_host.items():
            row.sent_per_host[kind] = statistics.median(values)
            print(f"controller bytes sent per host over SSH, {kind}: median {row.sent_per_host[kind]:,.0f}")
        return [row]
    finally:
        if origin is not None:
            origin.terminate()
            origin.wait(timeout=30)
        if proxy is not None:
            proxy.terminate()
        fleet.down()
        shutil.rmtree(state, ignore_errors=True)


def bench_round_trips(runs: int, delay_ms: float) -> str:
    """Round trips per host of each operation, measured: one host behind the proxy, each operation
    timed with no added delay and with `delay_ms` each way (interleaved); the difference over one
    added round trip (2 x delay) is how many round trips the operation waits for, whatever the
    local costs (process start, CPU) are, since those are in both."""
    state = tempfile.mkdtemp(prefix="bench-rtt-")
    fleet = LocalFleet(state)
    fleet.up(1, subnet="127.0.5", port=2222)
    proxies = []
    try:
        text = Path(fleet.inventory_path).read_text().replace('deploy_to: "/srv/app"', f'deploy_to: "{TOOL_DIR}"')
        Path(fleet.inventory_path).write_text(text)
        artifacts = make_artifacts(state, 4 * runs + 1, 0.1)
        routes = {}
        for delay in (0.0, delay_ms):
            folder = os.path.join(state, f"proxy-{delay:g}")
            os.makedirs(folder)
            process, inventory, known_hosts = start_proxies(fleet, delay, folder, port_offset=len(proxies))
            proxies.append(process)
            (host,) = fleet.hosts()
            endpoint = (host.address.replace("127.0.5.", "127.0.7."), host.port + len(proxies) - 1)
            routes[delay] = (inventory, endpoint, ssh_base(fleet.identity_file, known_hosts))
        one_host = functools.partial(tool, hosts=1)
        one_host("deploy", "-i", routes[0.0][0], "--artifact", artifacts[0])
        fan_out([routes[0.0][1]], routes[0.0][2], ssh_deploy_command("r0"), artifacts[0])
        times: dict[tuple[str, float], list[float]] = {}

        def timed(name: str, delay: float, action, *args) -> None:  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            action(*args)
            times.setdefault((name, delay), []).append(time.perf_counter() - started)

        used = 1
        for run in range(runs):
            for delay in (0.0, delay_ms) if run % 2 == 0 else (delay_ms, 0.0):
                inventory, endpoint, base = routes[delay]
                artifact = artifacts[used]
                release = f"r{used}"
                used += 1
                timed("deploy", delay, one_host, "deploy", "-i", inventory, "--artifact", artifact, "--unpin")
                timed("rollback", delay, one_host, "rollback", "-i", inventory)
                timed("status", delay, one_host, "status", "-i", inventory)
                timed("OpenSSH deploy", delay, fan_out, [endpoint], base, ssh_deploy_command(release), artifact)
                timed("OpenSSH rollback", delay, fan_out, [endpoint], base, ssh_rollback_command("r0"), None)
            print(f"  round trips: run {run + 1}/{runs} done", file=sys.stderr)
        lines = [
            f"round trips per host, from each operation's time at +{delay_ms:g} ms each way minus at +0 "
            f"(one host, median of {runs})",
            "",
            "| operation | s at +0 | s at +delay | round trips |",
            "|---|---|---|---|",
        ]
        for name in ("deploy", "rollback", "status", "OpenSSH deploy", "OpenSSH rollback"):
            base_s, slow_s = statistics.median(times[(name, 0.0)]), statistics.median(times[(name, delay_ms)])
            trips = (slow_s - base_s) / (2 * delay_ms / 1000)
            lines.append(f"| {name} | {base_s:.2f} | {slow_s:.2f} | {trips:.1f} |")
        return "\n".join(lines)
    finally:
        for process in proxies:
            process.terminate()
        fleet.down()
        shutil.rmtree(state, ignore_errors=True)


def peaks_text() -> str:
    lines = []
    for (hosts, operation), runs in sorted(PEAKS.items()):
        rss = max(p[0] for p in runs)
        lines.append(
            f"tool {operation}, {hosts} hosts: peak RSS {rss / 1024:.0f} MB ({rss / hosts:.0f} KB per host), "
            f"threads {max(p[1] for p in runs)}, open files {max(p[2] for p in runs)}"
        )
    return "\n".join(lines)


def bench_targets(runs: int) -> str:
    """Every case of issue 18's targets, each measured as its own mode would, in one run: the
    table of target against measured, then each mode's full table."""
    cases: list[tuple[str, str, str, bool]] = []  # case, target, measured, met
    tables = []

    def add(label: str, rows: list[Row], latency_ms: float = 0.0) -> dict[str, Row]:
        tables.append(f"{label}\n\n{table(rows, latency_ms)}")
        return {row.operation.split()[0]: row for row in rows}

    plain20 = add("20 hosts, 4 MB", bench(20, runs, 4.0, 0.0))
    plain50 = add("50 hosts, 4 MB", bench(50, runs, 4.0, 0.0))
    slow20 = add("20 hosts, 4 MB, +25 ms each way", bench(20, runs, 4.0, 25.0), 25.0)
    large = add("1,000 hosts, 0.8 MB", bench(1000, runs, 0.8, 0.0))
    pull = add("50 hosts, 50 MB: push (tool column) against pull (OpenSSH column)", bench_pull(50, runs, 50.0))

    def versus(case: str, row: Row, limit: float) -> None:
        measured = ratio(row)
        cases.append(
            (case, f"<= {limit}x OpenSSH fan-out", f"{measured:.2f}x ({median(row.tool, 'seconds'):.1f} s "
             f"vs {median(row.ssh, 'seconds'):.1f} s)", measured <= limit)
        )  # fmt: skip

    versus("rollback, 50 hosts, no added latency", plain50["rollback"], 0.7)
    versus("deploy 4 MB, 20 hosts, no added latency", plain20["deploy"], 0.9)
    versus("rollback, 20 hosts, +25 ms each way", slow20["rollback"], 0.8)
    versus("deploy 4 MB, 20 hosts, +25 ms each way", slow20["deploy"], 1.0)
    versus("rollback, 1,000 hosts", large["rollback"], 0.7)
    rss = max(p[0] for operation in ("deploy", "rollback") for p in PEAKS[(1000, operation)])
    cases.append(
        ("1,000 hosts: client memory (peak of deploy and rollback)", "<= 256 KB per host",
         f"{rss / 1000:.0f} KB per host (peak RSS {rss / 1024:.0f} MB, all of it)", rss / 1000 <= 256)
    )  # fmt: skip
    versus("deploy 0.8 MB, 1,000 hosts", large["deploy"], 0.9)
    row = pull["deploy"]
    cases.append(
        ("deploy 50 MB, 50 hosts: pull from a local HTTP origin against push", "pull <= 0.5x push",
         f"{1 / ratio(row):.2f}x ({median(row.ssh, 'seconds'):.1f} s vs {median(row.tool, 'seconds'):.1f} s)",
         1 / ratio(row) <= 0.5)
    )  # fmt: skip
    sent = row.sent_per_host["pull"]
    cases.append(("pull: controller bytes sent per host", "< 10 KB", f"{sent / 1024:.1f} KB", sent < 10 * 1024))
    # the tool's own samples: every row's tool column, and the pull row's other column (also the tool)
    runs_of_the_tool = [(op, r.tool) for group in (plain20, plain50, slow20, large) for op, r in group.items()]
    runs_of_the_tool += [("deploy", row.tool), ("deploy", row.ssh)]
    connections = max(median(samples, "connections") for _, samples in runs_of_the_tool)
    deploy_sessions = max(median(samples, "sessions") for op, samples in runs_of_the_tool if op == "deploy")
    rollback_sessions = max(median(samples, "sessions") for op, samples in runs_of_the_tool if op == "rollback")
    cases.append(
        ("connections and sessions per host (every case above, pull included)", "1 and <= 3 / <= 2",
         f"{connections:g} and {deploy_sessions:g} (deploy) / {rollback_sessions:g} (rollback)",
         connections == 1 and deploy_sessions <= 3 and rollback_sessions <= 2)
    )  # fmt: skip
    lines = ["| case | target | measured | met |", "|---|---|---|---|"]
    lines += [f"| {case} | {target} | {value} | {'yes' if met else '**no**'} |" for case, target, value, met in cases]
    return "\n".join(lines) + "\n\n" + "\n\n".join(tables) + "\n\n" + peaks_text()


def median(samples: list[Sample], attribute: str) -> float:
    return statistics.median(getattr(sample, attribute) for sample in samples)


def table(rows: list[Row], latency_ms: float) -> str:
    header = (
        "| hosts | operation | tool s | OpenSSH s | tool/OpenSSH | connections/host | sessions/host "
        "| client CPU ms/host (tool) | client CPU ms/host (OpenSSH) | hosts' CPU ms/host (tool) "
        "| hosts' CPU ms/host (OpenSSH) |"
    )
    lines = [header, "|" + "---|" * 11]
    for row in rows:
        tool_s, ssh_s = median(row.tool, "seconds"), median(row.ssh, "seconds")
        lines.append(
            f"| {row.hosts} | {row.operation}{f' (+{latency_ms:g} ms each way)' if latency_ms else ''} "
            f"| {tool_s:.2f} | {ssh_s:.2f} | {tool_s / ssh_s:.2f} "
            f"| {median(row.tool, 'connections'):.1f} (OpenSSH {median(row.ssh, 'connections'):.1f}) "
            f"| {median(row.tool, 'sessions'):.1f} (OpenSSH {median(row.ssh, 'sessions'):.1f}) "
            f"| {median(row.tool, 'cpu') * 1000 / row.hosts:.1f} | {median(row.ssh, 'cpu') * 1000 / row.hosts:.1f} "
            f"| {median(row.tool, 'host_cpu') * 1000 / row.hosts:.1f} "
            f"| {median(row.ssh, 'host_cpu') * 1000 / row.hosts:.1f} |"
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", default="20,50,100", help="comma-separated fleet sizes")
    parser.add_argument("--runs", type=int, default=5, help="interleaved runs per operation (median reported)")
    parser.add_argument("--artifact-mb", type=float, default=4.0, help="size of the incompressible artifact")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay added each way by a TCP proxy")
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    parser.add_argument("--pull", action="store_true", help="the tool's push deploy against its pull deploy (nginx)")
    parser.add_argument(
        "--round-trips", action="store_true", help="round trips per host of each operation (one host, --latency-ms)"
    )
    parser.add_argument(
        "--targets", action="store_true", help="every case of the performance targets in one run (about 45 min)"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the benchmark starts real sshd hosts: run it as root", file=sys.stderr)
        return 2
    result = ""
    if args.round_trips:
        result = f"{machine()}\n{bench_round_trips(args.runs, args.latency_ms or 100)}\n"
    elif args.targets:
        result = f"{machine()}\nmedian of {args.runs} interleaved runs\n\n{bench_targets(args.runs)}\n"
    if result:
        print(result)
        if args.out:
            Path(args.out).write_text(result)
        return 0
    rows: list[Row] = []
    for hosts in (int(value) for value in args.hosts.split(",")):
        if args.pull:
            rows += bench_pull(hosts, args.runs, args.artifact_mb)
        else:
            rows += bench(hosts, args.runs, args.artifact_mb, args.latency_ms)
    peaks = peaks_text()
    result = f"{machine()}\nmedian of {args.runs} interleaved runs\n\n{table(rows, args.latency_ms)}\n\n{peaks}\n"
    print(result)
    if args.out:
        Path(args.out).write_text(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
