"""What the tool does on a paramiko channel below paramiko's public API, each for a reason its
docstring gives: a session's channel asked for before it is needed, the exec request sent without
waiting for its reply, the session's stdin ended in order with the host's CLOSE, and a reader woken
without a file descriptor per channel. Checked against paramiko 3.4 to 5.x."""

from __future__ import annotations

import threading
import time
from typing import Any

import paramiko


class ChannelAhead:
    """A session channel asked for before the step that uses it. `Transport.open_session` sends
    the open and blocks for sshd's confirmation, a round trip per session; asked for while the
    current step runs (or as soon as the host is connected), the confirmation is in by the time the
    next step starts. Built as paramiko's own `open_channel` builds it, without its wait, on the
    calling thread (no thread per host; a background `open_session` beside the worker's own use of
    the transport was what the first version did). A channel asked for and never taken runs nothing
    on the host (sshd starts a command only on exec) and goes with its connection."""

    def __init__(self, transport: paramiko.Transport) -> None:
        self.transport = transport
        t: Any = transport  # paramiko's internals, see the docstring
        with t.lock:
            window = t._sanitize_window_size(None)  # noqa: SLF001
            packet = t._sanitize_packet_size(None)  # noqa: SLF001
            self.chanid: int = t._next_channel()  # noqa: SLF001
            message = paramiko.Message()
            message.add_byte(paramiko.common.cMSG_CHANNEL_OPEN)
            message.add_string("session")
            message.add_int(self.chanid)
            message.add_int(window)
            message.add_int(packet)
            # held here: paramiko's map of channels keeps only weak references
            self.channel = channel = paramiko.Channel(self.chanid)
            t._channels.put(self.chanid, channel)  # noqa: SLF001
            self.confirmed = threading.Event()
            t.channel_events[self.chanid] = self.confirmed
            t.channels_seen[self.chanid] = True
            channel._set_transport(transport)  # type: ignore[attr-defined]  # noqa: SLF001
            channel._set_window(window, packet)  # type: ignore[attr-defined]  # noqa: SLF001
        t._send_user_message(message)  # noqa: SLF001

    def take(self, timeout: float) -> paramiko.Channel | None:
        """The channel once sshd confirmed it (waiting at most `timeout`), or None: refused (a host
        whose sshd allows one session at a time, `MaxSessions 1`), not confirmed in time, or the
        connection gone. The caller then opens one itself, and reports what that one meets."""
        transport: Any = self.transport
        deadline = time.monotonic() + timeout
        while not self.confirmed.wait(min(0.1, max(0.0, deadline - time.monotonic()))):
            if not transport.is_active() or time.monotonic() >= deadline:
                return None
        if transport._channels.get(self.chanid) is not self.channel:  # noqa: SLF001
            transport.get_exception()  # refused: paramiko kept the refusal for open_channel's caller, i.e. us
            return None
        return self.channel


def exec_without_waiting(transport: paramiko.Transport, channel: paramiko.Channel, command: str) -> None:
    """`channel.exec_command(command)` without waiting for sshd's reply: what follows (stdin, then
    reading) goes out at once, one round trip less per session. sshd handles the channel's messages
    in order, so the command has started when the stdin data reaches it. The reply still comes: a
    refusal makes paramiko close the channel (`Channel._request_failed`), which ends the step with
    no exit status (-1), as a command killed by a signal does. Built as paramiko's own
    `exec_command` builds it (3.4 to 5.x)."""
    message = paramiko.Message()
    message.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
    message.add_int(channel.remote_chanid)
    message.add_string("exec")
    message.add_boolean(True)
    message.add_string(command)
    transport._send_user_message(message)  # type: ignore[attr-defined]  # noqa: SLF001 - see the docstring


def end_stdin(channel: paramiko.Channel) -> None:
    """Send the session's EOF unless its channel is closed or its EOF already went, in order with
    paramiko's own handling of the host's CLOSE. `Channel.shutdown_write` marks the EOF sent under
    the channel's lock but sends it after releasing it: when the host's CLOSE is handled in that gap
    (its script had just ended), paramiko's CLOSE goes first, sshd frees the channel, and then our
    EOF is a message for a channel that does not exist: sshd drops the whole connection (the soak
    lost a host that way: "ieof packet referred to nonexistent channel 0"). Sent here under the
    lock, so the transport's thread handles that CLOSE only after our EOF is out. During a key
    exchange the lock is not held while sending (paramiko's reason for releasing it: a send waits
    for the exchange, which may need the lock), as paramiko does."""
    transport: Any = channel.get_transport()
    with channel.lock:
        if channel.closed or channel.eof_sent:
            return
        if transport is not None:
            # The transport's clear-to-send lock, as its own _send_user_message takes it: a key
            # exchange cannot start between the check and the send (a send that then waited for
            # it here, holding the channel's lock, would stall the transport's thread on it).
            with transport.clear_to_send_lock:
                if transport.is_active() and transport.clear_to_send.is_set():
                    message = channel._send_eof()  # type: ignore[attr-defined]  # noqa: SLF001 - see the docstring
                    if message is not None:
                        transport._send_message(message)  # noqa: SLF001
                    return
    channel.shutdown_write()


class Wakeup(threading.Event):
    """Set when either stream of a channel has data or is closed, with no file descriptor:
    Channel.fileno() makes a pipe pair per channel, and select() refuses a descriptor past 1023,
    which a fleet of a few hundred hosts passes. paramiko clears a stream's event when that
    stream is drained; here only the reader clears it (`arm`, before it looks at both streams),
    so data on one stream is never hidden by draining the other."""

    def __init__(self, channel: paramiko.Channel) -> None:
        super().__init__()
        channel.in_buffer.set_event(self)
        channel.in_stderr_buffer.set_event(self)

    def clear(self) -> None:
        """paramiko's call when one stream is drained: ignored (see the class)."""

    def arm(self) -> None:
        super().clear()
