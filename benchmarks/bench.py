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

`--targets` runs every row of the performance targets (issue 30: 20, 50 and 1,000 hosts, +25 ms,
the hosts' CPU, control bytes, round trips, pull against push behind a 1 Gbit/s controller uplink)
and writes goal, measured and met, then each case's own table.

`--round-trips` counts the round trips each operation waits for on one host: its time with the
delay minus its time without, over one added round trip.

`--pull` compares the tool with itself: a deploy that uploads the artifact to every host (push)
against one where every host fetches it from a local nginx (`--pull URL`), interleaved; the bytes
the controller sends each host over SSH are counted by a pass-through proxy in front of every host.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.costs import bench_costs  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    PEAKS,
    TOOL_DIR,
    LocalFleet,
    Row,
    Sample,
    fan_out,
    machine,
    make_artifacts,
    measured,
    median,
    ratio,
    shaped_uplink,
    ssh_base,
    ssh_deploy_command,
    ssh_rollback_command,
    start_nginx,
    start_proxies,
    table,
    tool,
)
from benchmarks.receive import bench_receive  # noqa: E402


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


def bench_pull(hosts: int, runs: int, megabytes: float, uplink_mbit: float = 0.0) -> list[Row]:
    """Push (upload to every host) against pull (every host fetches from nginx), both by the tool,
    interleaved; controller bytes per host counted by a pass-through proxy. Row.tool is push,
    Row.ssh is pull (the table's columns say so). `uplink_mbit`: the controller's traffic to the
    hosts shares a link of that many Mbit/s (`shaped_uplink`); the origin stays unshaped."""
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
        link = f", controller uplink {uplink_mbit:g} Mbit/s" if uplink_mbit else ""
        row = Row(hosts, f"deploy {megabytes:g} MB{link}: push (tool column) vs pull (OpenSSH column)")
        per_host: dict[str, list[float]] = {"push": [], "pull": []}

        def counted(kind: str, action) -> Sample:  # type: ignore[no-untyped-def]
            before = sum(sent[:])
            sample = measured(fleet, hosts, action)
            per_host[kind].append((sum(sent[:]) - before) / hosts)
            return sample

        shaping = shaped_uplink(uplink_mbit) if uplink_mbit else contextlib.nullcontext()
        with shaping:
            _push_against_pull(runs, artifacts, url, inventory_path, hosts, row, counted)
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


def _push_against_pull(runs, artifacts, url, inventory_path, hosts, row, counted) -> None:  # type: ignore[no-untyped-def]
    """The measured runs of `bench_pull`, alternating which goes first."""
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


def bench_round_trips(runs: int, delay_ms: float) -> tuple[str, dict[str, float]]:
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
        trips = {}
        for name in ("deploy", "rollback", "status", "OpenSSH deploy", "OpenSSH rollback"):
            base_s, slow_s = statistics.median(times[(name, 0.0)]), statistics.median(times[(name, delay_ms)])
            trips[name] = (slow_s - base_s) / (2 * delay_ms / 1000)
            lines.append(f"| {name} | {base_s:.2f} | {slow_s:.2f} | {trips[name]:.1f} |")
        return "\n".join(lines), trips
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
    """Every row of issue 30's targets, each measured as its own mode would, in one run: the table
    of goal, measured and met, then each case's full table (hosts' CPU and bytes beside the time)."""
    cases: list[tuple[str, str, str, bool]] = []  # case, goal, measured, met
    tables = []

    def add(label: str, rows: list[Row], latency_ms: float = 0.0) -> dict[str, Row]:
        tables.append(f"{label}\n\n{table(rows, latency_ms)}")
        return {row.operation.split()[0]: row for row in rows}

    small20 = add("20 hosts, 0.8 MB", bench(20, runs, 0.8, 0.0))
    plain20 = add("20 hosts, 4 MB", bench(20, runs, 4.0, 0.0))
    plain50 = add("50 hosts, 4 MB", bench(50, runs, 4.0, 0.0))
    slow20 = add("20 hosts, 4 MB, +25 ms each way", bench(20, runs, 4.0, 25.0), 25.0)
    large = add("1,000 hosts, 0.8 MB", bench(1000, runs, 0.8, 0.0))
    pull = add(
        "50 hosts, 50 MB, controller uplink 1 Gbit/s: push (tool column) against pull (OpenSSH column)",
        bench_pull(50, runs, 50.0, uplink_mbit=1000),
    )
    trips_text, trips = bench_round_trips(runs, 100)
    tables.append(trips_text)

    def versus(case: str, row: Row, limit: float) -> None:
        measured = ratio(row)
        cases.append(
            (case, f"<= {limit}x OpenSSH fan-out", f"{measured:.2f}x ({median(row.tool, 'seconds'):.1f} s "
             f"vs {median(row.ssh, 'seconds'):.1f} s)", measured <= limit)
        )  # fmt: skip

    def cpu(case: str, row: Row, limit: float) -> None:
        tool_ms, ssh_ms = (1000 * median(samples, "host_cpu") / row.hosts for samples in (row.tool, row.ssh))
        cases.append(
            (case, f"<= {limit}x the fan-out's", f"{tool_ms / ssh_ms:.1f}x ({tool_ms:.0f} ms vs {ssh_ms:.0f} ms)",
             tool_ms <= limit * ssh_ms)
        )  # fmt: skip

    versus("deploy 0.8 MB, 20 hosts", small20["deploy"], 0.9)
    versus("deploy 4 MB, 20 hosts", plain20["deploy"], 0.9)
    versus("rollback, 50 hosts", plain50["rollback"], 0.7)
    versus("rollback, 20 hosts, +25 ms each way", slow20["rollback"], 0.8)
    versus("deploy 4 MB, 20 hosts, +25 ms each way", slow20["deploy"], 1.0)
    cpu("hosts' CPU per host, deploy 4 MB (20 hosts)", plain20["deploy"], 2.0)
    cpu("hosts' CPU per host, rollback (20 hosts)", plain20["rollback"], 1.5)
    row = pull["deploy"]
    sent = row.sent_per_host["pull"]
    cases.append(("control bytes per host (pull deploy)", "< 10 KB", f"{sent / 1024:.1f} KB", sent < 10 * 1024))
    for operation, limit in (("deploy", 5), ("rollback", 4)):
        measured = trips[operation]
        cases.append(
            (f"round trips per host (1 host, +100 ms): {operation}", f"<= {limit}",
             f"{measured:.1f} (OpenSSH {trips['OpenSSH ' + operation]:.1f})", measured <= limit)
        )  # fmt: skip
    versus("rollback, 1,000 hosts", large["rollback"], 0.5)
    versus("deploy 0.8 MB, 1,000 hosts", large["deploy"], 0.7)
    cases.append(
        ("deploy 50 MB, 50 hosts, 1 Gbit/s controller uplink: pull against push", "pull <= 0.5x push",
         f"{1 / ratio(row):.2f}x ({median(row.ssh, 'seconds'):.1f} s vs {median(row.tool, 'seconds'):.1f} s)",
         1 / ratio(row) <= 0.5)
    )  # fmt: skip
    cases.append(_budgets([small20, plain20, plain50, slow20, large], row))
    lines = ["| case | goal | measured | met |", "|---|---|---|---|"]
    lines += [f"| {case} | {goal} | {value} | {'yes' if met else '**no**'} |" for case, goal, value, met in cases]
    return "\n".join(lines) + "\n\n" + "\n\n".join(tables) + "\n\n" + peaks_text()


def _budgets(groups: list[dict[str, Row]], pull: Row) -> tuple[str, str, str, bool]:
    """Connections and sessions per host over every case's tool runs (both columns of the pull row)."""
    runs_of_the_tool = [(op, r.tool) for group in groups for op, r in group.items()]
    runs_of_the_tool += [("deploy", pull.tool), ("deploy", pull.ssh)]
    connections = max(median(samples, "connections") for _, samples in runs_of_the_tool)
    deploy_sessions = max(median(samples, "sessions") for op, samples in runs_of_the_tool if op == "deploy")
    rollback_sessions = max(median(samples, "sessions") for op, samples in runs_of_the_tool if op == "rollback")
    return (
        "connections and sessions per host (every case above, pull included)", "1 and <= 3 / <= 2",
        f"{connections:g} and {deploy_sessions:g} (deploy) / {rollback_sessions:g} (rollback)",
        connections == 1 and deploy_sessions <= 3 and rollback_sessions <= 2,
    )  # fmt: skip


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
        "--targets", action="store_true", help="every row of the performance targets in one run (about an hour)"
    )
    parser.add_argument(
        "--receive", action="store_true", help="a host's CPU receiving --artifact-mb by sender (benchmarks/receive.py)"
    )
    parser.add_argument(
        "--costs", action="store_true", help="a host's CPU per session and per program (benchmarks/costs.py)"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the benchmark starts real sshd hosts: run it as root", file=sys.stderr)
        return 2
    result = ""
    if args.round_trips:
        result = f"{machine()}\n{bench_round_trips(args.runs, args.latency_ms or 100)[0]}\n"
    elif args.receive:
        result = f"{machine()}\n{bench_receive(args.runs, args.artifact_mb)}\n"
    elif args.costs:
        result = f"{machine()}\n{bench_costs(args.runs)}\n"
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
