"""What one exec session and one program cost a host (issue 30: where a rollback's hosts' CPU goes,
and whether one session per operation would be worth its redesign).

One local host. Each sample is one connection (paramiko, as the tool connects) that runs what the
case says and closes; the host's CPU is read from the cgroup holding its sshd listener (as in the
main benchmark), so a sample counts the connection's whole life. A connection
running one session of `true` is measured the same way and subtracted, then divided by the count:

- a session: SESSIONS sessions of `true`, one after the other (what a session costs beside its work);
- a program: one session whose shell runs PROGRAMS times `:` (a builtin: the loop's own cost),
  `sync -f .`, or `mv -f` of a file onto itself (the scripts' flush and rename).

    ./dev.sh bench --costs [--runs 5]
"""

from __future__ import annotations

import shutil
import statistics
import tempfile

from benchmarks.harness import hosts_cpu, paramiko_client, settled
from deployer.playground.localfleet import LocalFleet

SESSIONS = 40
PROGRAMS = 200
LOOP = 'i=0; : > .costs.$$; while [ "$i" -lt {n} ]; do {body}; i=$((i + 1)); done; rm -f .costs.$$'
CASES = {  # name: (commands run one session each, count to divide by)
    "a session (`true`)": (["true"] * SESSIONS, SESSIONS - 1),
    "the loop itself (builtin `:`)": ([LOOP.format(n=PROGRAMS, body=":")], PROGRAMS),
    "a program: `sync -f .`": ([LOOP.format(n=PROGRAMS, body="sync -f .")], PROGRAMS),
    "a program: `mv -f` of a file onto itself": ([LOOP.format(n=PROGRAMS, body="mv -f .costs.$$ .costs.$$")], PROGRAMS),
}


def bench_costs(runs: int) -> str:
    state = tempfile.mkdtemp(prefix="bench-costs-")
    fleet = LocalFleet(state)
    fleet.up(1, subnet="127.0.5", port=2222)

    def connection(commands: list[str]) -> float:
        before = hosts_cpu(fleet)
        client = paramiko_client(fleet)
        try:
            for command in commands:
                channel = client.get_transport().open_session()  # type: ignore[union-attr]
                channel.exec_command(command)
                assert channel.recv_exit_status() == 0, command
                channel.close()
        finally:
            client.close()
        return settled(fleet, before)

    samples: dict[str, list[float]] = {}
    try:
        for run in range(runs):
            names = list(CASES) if run % 2 == 0 else list(reversed(CASES))  # interleaved, order alternating
            for name in names:
                commands, count = CASES[name]
                base = connection(["true"])
                samples.setdefault(name, []).append((connection(commands) - base) / count)
        lines = [
            f"hosts' CPU per session and per program, one host, over one connection (median of {runs}, ms)",
            "",
            "| what | ms each |",
            "|---|---|",
        ]
        lines += [f"| {name} | {statistics.median(samples[name]) * 1000:.2f} |" for name in CASES]
        return "\n".join(lines)
    finally:
        fleet.down()
        shutil.rmtree(state, ignore_errors=True)
