"""What the tool does on a paramiko channel below paramiko's public API, each for a reason its
docstring gives: the exec request sent without waiting for its reply, the session's stdin ended in
order with the host's CLOSE, and a reader woken without a file descriptor per channel. Checked
against paramiko 3.4 to 5.x."""

from __future__ import annotations

import threading

import paramiko


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
    transport = channel.get_transport()
    with channel.lock:
        if channel.closed or channel.eof_sent:
            return
        if transport is not None and transport.clear_to_send.is_set():
            message = channel._send_eof()  # type: ignore[attr-defined]  # noqa: SLF001 - see the docstring
            transport._send_user_message(message)  # type: ignore[attr-defined]  # noqa: SLF001
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
