"""What a host's sshd spends receiving an upload, by sender (issue 30: the tool's deploy seemed to
cost the hosts 7x the OpenSSH fan-out's CPU; it was the fan-out's that went uncounted, see
`harness.hosts_cpu`).

One local host; each sample is one connection that sends N MB of random bytes into `cat >/dev/null`
and closes. The host's CPU is read from the cgroup holding its sshd listener (as in the main
benchmark), so each sample counts the connection's whole life: handshake, authentication, the
session and `cat`. A connection that sends nothing (`true`) is measured the same way and
subtracted, leaving what receiving the bytes cost. Senders:

- OpenSSH's client with its default cipher (chacha20-poly1305) and with paramiko's (aes128-ctr +
  hmac-sha2-256), and AES-GCM;
- the tool's own upload path (`HostConnection.run`, paced: `upload.IN_FLIGHT` unread bytes at most);
- paramiko sending everything at once (`sendall` of 32 KB packets, the window the only limit), with
  its default cipher and with AES-GCM forced.

    ./dev.sh bench --receive [--runs 7] [--artifact-mb 4]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import paramiko

from benchmarks.harness import hosts_cpu, paramiko_client, settled
from deployer.fleet import Fleet
from deployer.inventory import load_inventory
from deployer.playground.localfleet import LocalFleet

SINK = "cat >/dev/null"
Send = Callable[[bytes], None]


def bench_receive(runs: int, megabytes: float) -> str:
    state = tempfile.mkdtemp(prefix="bench-receive-")
    fleet = LocalFleet(state)
    fleet.up(1, subnet="127.0.5", port=2222)
    (host,) = fleet.hosts()
    data = os.urandom(int(megabytes * 1024 * 1024))
    source = Path(state, "upload.bin")
    source.write_bytes(data)
    inventory = load_inventory(fleet.inventory_path)

    def openssh(*options: str) -> Send:
        def send(payload: bytes) -> None:
            command = fleet.ssh_command(host.name, SINK if payload else "true")
            command[1:1] = list(options)
            with source.open("rb") as stdin:
                subprocess.run(command, stdin=stdin if payload else subprocess.DEVNULL, check=True, timeout=120)

        return send

    def tool(payload: bytes) -> None:
        connections = Fleet(inventory)
        try:
            handle = connections.connect(inventory.hosts[0])
            result = handle.run(SINK if payload else "true", timeout=120, upload=[payload] if payload else None)
            assert result.exit_status == 0, result
        finally:
            connections.close()

    def unpaced(*ciphers: str) -> Send:
        def send(payload: bytes) -> None:
            others = [c for c in paramiko.Transport._preferred_ciphers if c not in ciphers]  # noqa: SLF001
            client = paramiko_client(fleet, {"ciphers": others} if ciphers else {})
            try:
                channel = client.get_transport().open_session()  # type: ignore[union-attr]
                channel.exec_command(SINK if payload else "true")
                packet = channel.out_max_packet_size - 64
                for offset in range(0, len(payload), packet):
                    channel.sendall(payload[offset : offset + packet])
                channel.shutdown_write()
                assert channel.recv_exit_status() == 0
            finally:
                client.close()

        return send

    senders: dict[str, Send] = {
        "OpenSSH, chacha20-poly1305 (its default)": openssh(),
        "OpenSSH, aes128-ctr + hmac-sha2-256": openssh("-c", "aes128-ctr", "-m", "hmac-sha2-256"),
        "OpenSSH, aes128-gcm": openssh("-c", "aes128-gcm@openssh.com"),
        "the tool (paced upload), aes128-ctr + hmac-sha2-256": tool,
        "paramiko at once, aes128-ctr + hmac-sha2-256": unpaced(),
        "paramiko at once, aes128-gcm": unpaced("aes128-gcm@openssh.com"),
    }
    samples: dict[tuple[str, bool], list[float]] = {}
    try:
        for run in range(runs):
            names = list(senders) if run % 2 == 0 else list(reversed(senders))  # interleaved, order alternating
            for name in names:
                for payload in (data, b""):
                    before = hosts_cpu(fleet)
                    senders[name](payload)
                    samples.setdefault((name, bool(payload)), []).append(settled(fleet, before))
        return _table(samples, list(senders), runs, megabytes)
    finally:
        fleet.down()
        shutil.rmtree(state, ignore_errors=True)


def _table(samples: dict[tuple[str, bool], list[float]], senders: list[str], runs: int, megabytes: float) -> str:
    lines = [
        f"hosts' CPU receiving {megabytes:g} MB into `{SINK}` over one connection (median of {runs}, ms)",
        "",
        "| sender | whole connection | connection sending nothing | receiving the bytes |",
        "|---|---|---|---|",
    ]
    for name in senders:
        full = statistics.median(samples[(name, True)]) * 1000
        empty = statistics.median(samples[(name, False)]) * 1000
        lines.append(f"| {name} | {full:.0f} | {empty:.0f} | {full - empty:.0f} |")
    return "\n".join(lines)
