"""Upload pacing: never more than IN_FLIGHT unconsumed bytes outstanding at the host's sshd.

The channel here is a stand-in with paramiko's window bookkeeping (lock, condition, window size,
packet size); a consumer thread plays sshd, granting the window back as the remote command reads.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from deployer import connection
from deployer.inventory import Host

WINDOW = 2 * 1024 * 1024
PACKET = 32768


class WindowedChannel:
    def __init__(self, consume_per_tick: int) -> None:
        self.lock = threading.Lock()
        self.out_buffer_cv = threading.Condition(self.lock)
        self.out_window_size = WINDOW
        self.out_max_packet_size = PACKET
        self.closed = False
        self.timeout = 5.0
        self.received = bytearray()
        self.unconsumed = 0
        self.peak_unconsumed = 0
        self.sizes: list[int] = []
        self.consume_per_tick = consume_per_tick
        self.stop = threading.Event()
        self.consumer = threading.Thread(target=self._consume, daemon=True)
        self.consumer.start()

    def settimeout(self, seconds: float) -> None:
        self.timeout = seconds

    def sendall(self, data: memoryview) -> None:
        """Like paramiko's: blocks until the window has room, times out after the channel's timeout."""
        with self.lock:
            if not self.out_buffer_cv.wait_for(lambda: self.out_window_size >= len(data), self.timeout):
                raise TimeoutError()
            self.out_window_size -= len(data)
            self.unconsumed += len(data)
            self.peak_unconsumed = max(self.peak_unconsumed, self.unconsumed)
            self.received += bytes(data)
            self.sizes.append(len(data))

    def _consume(self) -> None:
        while not self.stop.is_set():
            time.sleep(0.001)
            with self.lock:
                taken = min(self.unconsumed, self.consume_per_tick)
                self.unconsumed -= taken
                self.out_window_size += taken  # sshd's window adjustment
                self.out_buffer_cv.notify_all()


def sender() -> connection.HostConnection:
    host = connection.HostConnection.__new__(connection.HostConnection)
    host.host = Host("web1", "127.0.0.1")
    host.timeouts = SimpleNamespace(command=5.0, connect=5.0)
    host.observer = None
    host.stopping = threading.Event()
    return host


def test_a_slow_reader_never_has_more_than_the_in_flight_limit_waiting():
    channel = WindowedChannel(consume_per_tick=256 * 1024)
    payload = bytes(range(256)) * (6 * 1024 * 1024 // 256)
    try:
        sender()._send(channel, [payload[:1000], payload[1000:]], time.monotonic() + 30)  # type: ignore[arg-type]
    finally:
        channel.stop.set()
    assert bytes(channel.received) == payload
    assert channel.peak_unconsumed <= connection.IN_FLIGHT + PACKET
    assert max(channel.sizes) <= PACKET - 64  # one SSH packet per send, never split by paramiko


def test_a_reader_that_stops_reading_times_the_upload_out():
    channel = WindowedChannel(consume_per_tick=0)
    try:
        with pytest.raises(TimeoutError):
            sender()._send(channel, [b"x" * (4 * 1024 * 1024)], time.monotonic() + 0.3)  # type: ignore[arg-type]
    finally:
        channel.stop.set()
    assert channel.peak_unconsumed <= connection.IN_FLIGHT + PACKET


class StoppedMidway(WindowedChannel):
    """Sets `stopping` (as Fleet.settle does on Ctrl-C) from inside the send that crosses `after`
    bytes: the moment is fixed by the data, not by a timer racing the sender."""

    def __init__(self, after: int, stopping: threading.Event) -> None:
        super().__init__(consume_per_tick=64 * 1024)
        self.after = after
        self.stopping = stopping
        self.stopped_at: int | None = None

    def sendall(self, data: memoryview) -> None:
        super().sendall(data)
        if self.stopped_at is None and len(self.received) >= self.after:
            self.stopping.set()
            self.stopped_at = len(self.received)


def test_ctrl_c_stops_an_upload_at_the_next_packet():
    """Fleet.settle (after Ctrl-C) sets `stopping`: the sender stops before touching the data again,
    so the artifact's memory map can be closed safely once the workers are done."""
    host = sender()
    channel = StoppedMidway(after=1024 * 1024, stopping=host.stopping)
    payload = b"y" * (8 * 1024 * 1024)
    try:
        with pytest.raises(connection.Interrupted):
            host._send(channel, [payload], time.monotonic() + 30)  # type: ignore[arg-type]
    finally:
        channel.stop.set()
    assert channel.stopped_at is not None and channel.stopped_at < len(payload)
    assert len(channel.received) == channel.stopped_at  # not one packet more
