"""An upload to a remote command's stdin, paced: what the command has not read yet stays small at
the host's sshd. Used by `deployer.connection` for every session that sends bytes (a push deploy's
artifact, a script kept on the host)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import paramiko

UPLOAD_REPORT_BYTES = 256 * 1024  # how often an upload's progress is told (see `send_paced`)
IN_FLIGHT = 1024 * 1024  # unconsumed upload bytes allowed at a host's sshd; see `send_paced`


class Interrupted(Exception):
    """The operation is being interrupted (Ctrl-C): an upload stops at its next packet."""


def send_paced(
    channel: paramiko.Channel,
    parts: Sequence[bytes | memoryview],
    deadline: float,
    stopping: threading.Event,
    report: Callable[[int, int], None] | None = None,
) -> bool:
    """Stream `parts` to the channel, in order. False when the remote side closed its stdin early
    (the caller reads why from its output); `TimeoutError` past `deadline`, `Interrupted` once
    `stopping` is set (checked before every packet). `report(sent, total)` is called every
    UPLOAD_REPORT_BYTES and at the end.

    Paced: at most IN_FLIGHT bytes that the remote command has not consumed yet (as sshd's window
    adjustments tell) are outstanding. sshd grows its channel buffer by copying it packet by
    packet when data arrives faster than the command reads it (OpenSSH's `sshbuf` grows to the
    exact size needed, and keeps what was already written out until half of it is), so a buffer
    of N bytes costs it about N^2/64 KiB of copying: a sender that fills the whole 2 MiB window
    makes sshd spend more CPU copying than receiving. The limit is fixed on purpose: sizing it
    from a measured round trip (the session's open) was tried and made local deploys slower,
    since under load that time is sshd's busyness, not the wire. At 50 ms it still allows
    20 MiB/s per host. One SSH packet per send, so paramiko never splits a chunk into a full and
    a tiny packet.
    """
    window = _window_opened(channel, deadline, stopping)
    packet = max(1024, channel.out_max_packet_size - 64)
    total = sum(len(part) for part in parts)
    sent = 0
    told = 0
    try:
        for part in parts:
            data = memoryview(part)
            for offset in range(0, len(data), packet):
                if stopping.is_set():
                    raise Interrupted()
                if report is not None and (sent - told >= UPLOAD_REPORT_BYTES or sent == 0):
                    report(sent, total)
                    told = sent
                sent += min(packet, len(data) - offset)
                # `stopping` is not asked here: it is checked before every packet
                _wait_while(channel, lambda: window - channel.out_window_size > IN_FLIGHT, deadline, None)
                channel.settimeout(max(0.01, deadline - time.monotonic()))
                channel.sendall(data[offset : offset + packet])  # type: ignore[arg-type]  # buffer protocol suffices
    except (TimeoutError, Interrupted):
        raise
    except (OSError, EOFError, paramiko.SSHException):
        return False
    if report is not None and total:
        report(total, total)
    return True


def _window_opened(channel: paramiko.Channel, deadline: float, stopping: threading.Event) -> int:
    """The window sshd grants the command, once it is granted: what is in flight is measured from
    it. OpenSSH confirms a session's channel with a window of 0 and opens it (2 MiB) only once it
    has handled the exec request; the exec goes out without waiting for that (one round trip less
    per session), so the window read at once was 0 and the pacing never held anything back (from
    2026-12-02 to 2026-12-07: every upload filled sshd's whole window)."""
    _wait_while(channel, lambda: channel.out_window_size == 0, deadline, stopping)
    return int(channel.out_window_size)


def _wait_while(
    channel: paramiko.Channel, waiting: Callable[[], bool], deadline: float, stopping: threading.Event | None
) -> None:
    """Wait, under the channel's lock, while `waiting()` holds and the channel is open: woken by
    paramiko at each window adjustment, `TimeoutError` at `deadline`, `Interrupted` once
    `stopping` (if given) is set."""
    with channel.lock:
        while not channel.closed and waiting():
            if stopping is not None and stopping.is_set():
                raise Interrupted()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError()
            channel.out_buffer_cv.wait(min(left, 0.1))
