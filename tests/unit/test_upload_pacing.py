"""Upload pacing: never more than IN_FLIGHT unconsumed bytes outstanding at the host's sshd.

The channel here is a stand-in with paramiko's window bookkeeping (lock, condition, window size,
packet size); a consumer thread plays sshd, granting the window back as the remote command reads.
"""

from __future__ import annotations

import threading
import time

import pytest

from deployer import upload

WINDOW = 2 * 1024 * 1024
PACKET = 32768


class WindowedChannel:
    """`opened_after`: like OpenSSH's sshd, the channel starts with a window of 0, opened to WINDOW
    that many seconds later (once sshd has handled the exec request the sender did not wait for)."""

    def __init__(self, consume_per_tick: int, opened_after: float | None = None) -> None:
        self.lock = threading.Lock()
        self.out_buffer_cv = threading.Condition(self.lock)
        self.out_window_size = WINDOW if opened_after is None else 0
        self.opened_after = opened_after
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
        if self.opened_after is not None:
            time.sleep(self.opened_after)
            with self.lock:
                self.out_window_size = WINDOW  # sshd's first window adjustment, after the exec
                self.out_buffer_cv.notify_all()
        while not self.stop.is_set():
            time.sleep(0.001)
            with self.lock:
                taken = min(self.unconsumed, self.consume_per_tick)
                self.unconsumed -= taken
                self.out_window_size += taken  # sshd's window adjustment
                self.out_buffer_cv.notify_all()


def send(channel: WindowedChannel, parts: list[bytes], seconds: float, stopping: threading.Event | None = None) -> bool:
    stopping = stopping or threading.Event()
    return upload.send_paced(channel, parts, time.monotonic() + seconds, stopping)  # type: ignore[arg-type]


@pytest.mark.parametrize("opened_after", [None, 0.05], ids=["window-open-at-once", "window-opened-after-exec"])
def test_a_slow_reader_never_has_more_than_the_in_flight_limit_waiting(opened_after):
    """Also when the window opens only after the sender started: OpenSSH's way (it confirms a
    session with a window of 0), where pacing once measured from 0 and held nothing back."""
    channel = WindowedChannel(consume_per_tick=256 * 1024, opened_after=opened_after)
    payload = bytes(range(256)) * (6 * 1024 * 1024 // 256)
    try:
        assert send(channel, [payload[:1000], payload[1000:]], 30)
    finally:
        channel.stop.set()
    assert bytes(channel.received) == payload
    assert channel.peak_unconsumed <= upload.IN_FLIGHT + PACKET
    assert max(channel.sizes) <= PACKET - 64  # one SSH packet per send, never split by paramiko


def test_a_window_that_never_opens_times_the_upload_out():
    channel = WindowedChannel(consume_per_tick=0, opened_after=60)
    try:
        with pytest.raises(TimeoutError):
            send(channel, [b"x" * 1024], 0.3)
    finally:
        channel.stop.set()
    assert channel.received == b""


def test_a_reader_that_stops_reading_times_the_upload_out():
    channel = WindowedChannel(consume_per_tick=0)
    try:
        with pytest.raises(TimeoutError):
            send(channel, [b"x" * (4 * 1024 * 1024)], 0.3)
    finally:
        channel.stop.set()
    assert channel.peak_unconsumed <= upload.IN_FLIGHT + PACKET


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
    stopping = threading.Event()
    channel = StoppedMidway(after=1024 * 1024, stopping=stopping)
    payload = b"y" * (8 * 1024 * 1024)
    try:
        with pytest.raises(upload.Interrupted):
            send(channel, [payload], 30, stopping)
    finally:
        channel.stop.set()
    assert channel.stopped_at is not None and channel.stopped_at < len(payload)
    assert len(channel.received) == channel.stopped_at  # not one packet more
