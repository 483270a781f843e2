"""One host's open SSH connection: each remote script runs as one exec session on it, its output
read apart and bounded, its upload paced, its `@progress` records told as they arrive. Errors of an
open connection (paramiko, socket, EOF) become `deployer.errors` here (`transport_errors`), only;
connecting is `deployer.fleet`'s."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import paramiko
from fabric import Connection

from deployer.channel import ChannelAhead, Wakeup, end_stdin, exec_without_waiting
from deployer.errors import CommandTimeout, HostError, HostUnreachable
from deployer.inventory import Host, Inventory
from deployer.protocol import MAX_OUTPUT_BYTES, ProtocolError
from deployer.upload import Interrupted, send_paced

log = logging.getLogger(__name__)

# (host name, event, detail) from worker threads: "connecting", "connected", "connect-failed",
# "step" (script name), "upload" ("sent/total" bytes), "step-ok"/"step-failed" (script name and exit
# status, or "timeout"/"lost"). For live views.
Observer = Callable[[str, str, str], None]
PROGRESS_RECORD = b"@progress\t"  # see deployer/protocol.py: told to the observer as it arrives
STDERR_TAIL_BYTES = 64 * 1024  # what is kept of a session's stderr (its end: where the errors are)


@contextmanager
def transport_errors(host: str, doing: str) -> Iterator[None]:
    """The one mapping of an open connection's paramiko, socket and EOF errors to `HostUnreachable`
    (naming what was being done). Timeouts pass through: the caller knows which limit it was."""
    try:
        yield
    except TimeoutError:
        raise
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise HostUnreachable(host, f"{doing}: {exc or type(exc).__name__}") from None


@dataclass(frozen=True)
class ExecResult:
    exit_status: int
    stdout: str  # the script's records (deployer/protocol.py); host text inside them is escaped
    stderr: str  # diagnostics for humans: never parsed for records; only its tail is kept
    seconds: float


class _Collected:
    """Bytes read from one stream of a session, bounded: at most `limit` kept (the head, or the tail)."""

    def __init__(self, limit: int, keep_tail: bool = False) -> None:
        self.limit = limit
        self.keep_tail = keep_tail
        self.chunks: list[bytes] = []
        self.size = 0
        self.overflow = False

    def add(self, data: bytes) -> None:
        self.size += len(data)
        self.chunks.append(data)
        if self.size > self.limit:
            self.overflow = True
            joined = b"".join(self.chunks)
            self.chunks = [joined[-self.limit :] if self.keep_tail else joined[: self.limit]]
            self.size = len(self.chunks[0])

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", errors="replace")


class HostConnection:
    """One open SSH connection to one host; runs scripts as exec sessions on it."""

    def __init__(
        self,
        host: Host,
        connection: Connection,
        inventory: Inventory,
        observer: Observer | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        self.host = host
        self.connection = connection
        self.timeouts = inventory.timeouts
        self.sessions = 0
        self.kept: set[str] = set()  # the file names of the scripts' copies this host keeps (deployer.scripts)
        self.observer = observer
        self.stopping = stopping or threading.Event()  # set on Ctrl-C: uploads stop at the next packet
        # Sessions the operation runs here when all goes well (its budget): up to that many, the
        # next session's channel is asked for while the current one runs (`ask_ahead`), so the next
        # step starts a round trip sooner. 0 once a host refused one (sshd's MaxSessions 1).
        self.sessions_expected = 1
        self._ahead: ChannelAhead | None = None

    def ask_ahead(self) -> None:
        """Ask for the next session's channel now, if the operation's budget has one more session
        (see `sessions_expected`); the next `start` takes it. Failing here costs nothing: that step
        opens its own and reports what it meets."""
        if self._ahead is not None or self.sessions >= self.sessions_expected:
            return
        transport = self.connection.client.get_transport()
        if transport is None or not transport.is_active():
            return
        try:
            self._ahead = ChannelAhead(transport)
        except (OSError, EOFError, paramiko.SSHException) as error:
            log.debug("%s: asking for a session's channel ahead failed: %s", self.host.name, error)

    def tell(self, event: str, detail: str = "") -> None:
        """Tell the observer (the live view, the timeline) what this host is doing."""
        if self.observer is not None:
            self.observer(self.host.name, event, detail)

    def run(
        self,
        command: str,
        timeout: float | None = None,
        upload: Sequence[bytes | memoryview] | None = None,
        step: str = "command",
        gate: threading.Semaphore | None = None,
        offer: bytes | None = None,
    ) -> ExecResult:
        """Run `command` (remote script `step`) in one exec session, optionally streaming `upload` to its stdin.

        stdout and stderr are read apart (records come from stdout only) and bounded: a host that
        sends more than MAX_OUTPUT_BYTES on stdout is refused (ProtocolError), only stderr's tail
        is kept. The whole call is bounded by `timeout` seconds.

        With `gate` (a pull deploy's cap on hosts fetching at once), stdin stays open after
        `upload`: when the script says `@progress fetch-wait` it gets a slot of the gate (waiting
        for one), then "go" on stdin; the slot is given back at `@progress fetched` or when the
        session ends.

        With `offer` (the script's own text, for a host that may have no copy of it), stdin stays
        open until the script says `@progress need-script` (then `offer` goes on stdin, and its
        end) or `@progress have-script` (then only the end).
        """
        return self.start(command, timeout, upload, step, gate, offer).finish()

    def start(
        self,
        command: str,
        timeout: float | None = None,
        upload: Sequence[bytes | memoryview] | None = None,
        step: str = "command",
        gate: threading.Semaphore | None = None,
        offer: bytes | None = None,
        verdict: bool = False,
    ) -> Session:
        """Open the session, start `command` and send `upload` (see `run`); the caller reads it to its
        end with `Session.finish`. With `verdict` (a switch whose lock and pruning wait for its
        batch's verdict), stdin also stays open: `Session.wait` returns at `@progress verdict-wait`,
        with no thread held while the host waits, and `Session.answer` gives the verdict."""
        limit = timeout if timeout is not None else self.timeouts.command
        started = time.monotonic()
        transport = self.connection.client.get_transport()
        if transport is None or not transport.is_active():
            raise HostUnreachable(self.host.name, "the SSH connection was lost")
        with transport_errors(self.host.name, "cannot open a session"):
            channel = self._channel(transport, min(limit, self.timeouts.connect))
        self.sessions += 1
        self.tell("step", step)
        records = _Records(self, channel, started + limit, gate, step, verdict, offer)
        session = Session(self, transport, channel, step, (started, limit), records)
        with session.mapped():
            channel.settimeout(limit)
            exec_without_waiting(transport, channel, command)
            self.ask_ahead()
            if upload:
                report = None if self.observer is None else (lambda sent, total: self.tell("upload", f"{sent}/{total}"))
                if not send_paced(channel, upload, session.records.deadline, self.stopping, report):
                    log.debug("%s: remote side closed stdin early", self.host.name)
            if gate is None and not verdict and offer is None:
                end_stdin(channel)
        return session

    def _channel(self, transport: paramiko.Transport, timeout: float) -> paramiko.Channel:
        """The channel asked for ahead if sshd confirmed it, else a new one. A host that refused
        one asked ahead (it allows one session at a time) is asked no more ahead on this
        connection: each refusal is an error line in its sshd's log. Both waits together are
        bounded by `timeout` (a host that never confirmed the first is not given a second)."""
        deadline = time.monotonic() + timeout
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            channel = ahead.take(timeout)
            if channel is not None:
                return channel
            self.sessions_expected = 0
        return self._open_session(transport, max(0.1, deadline - time.monotonic()))

    def _open_session(self, transport: paramiko.Transport, timeout: float) -> paramiko.Channel:
        """A new session channel. A host that allows few sessions per connection (sshd's
        `MaxSessions 1`) refuses one while it still counts the session just closed: sshd frees a
        closed channel on a later turn of its loop (a CLOSE and the next OPEN read together are
        handled in one turn), or only once the old session's last output is drained. Seen in CI:
        "open failed: Connect failed" right after a session ended. So after a refusal on a
        connection that has run a session, each retry follows a round trip (a keepalive sshd
        answers in order, on a later turn) and a short pause, for at most 3 s; a refusal after
        that is the host's answer."""
        try:
            return transport.open_session(timeout=timeout)
        except paramiko.ChannelException:
            if self.sessions == 0:
                raise
        give_up = time.monotonic() + 3.0
        while True:  # one debug line per refusal retried (each is a "no more sessions" in sshd's log)
            log.debug("%s: a new session was refused right after the last one; asking again", self.host.name)
            transport.global_request("keepalive@openssh.com", wait=True)
            try:
                return transport.open_session(timeout=timeout)
            except paramiko.ChannelException:
                if time.monotonic() >= give_up:
                    raise
                time.sleep(0.2)

    def close(self) -> None:
        self.connection.close()


class Session:
    """One exec session started by `HostConnection.start`: read to its end (`finish`), or, for a
    switch awaiting its batch's verdict, to where its host waits (`wait`), answered (`answer`), then
    finished. A session that waits holds no thread: a batch of any size waits at once, with the pool
    free for the hosts still switching. Every error ends as a `HostError` and closes the channel
    (the host's script then sees its stdin end: a switch waiting for its verdict holds)."""

    def __init__(
        self,
        connection: HostConnection,
        transport: paramiko.Transport,
        channel: paramiko.Channel,
        step: str,
        bounds: tuple[float, float],  # when it started, and its limit in seconds
        records: _Records,
    ) -> None:
        self.connection = connection
        self.transport = transport
        self.channel = channel
        self.step = step
        self.started, self.limit = bounds
        self.records = records
        self.stdout = _Collected(MAX_OUTPUT_BYTES)
        self.stderr = _Collected(STDERR_TAIL_BYTES, keep_tail=True)

    @contextmanager
    def mapped(self) -> Iterator[None]:
        """The one place a session's errors become `HostError`s (told to the observer); the channel
        is closed on any error."""
        host, step = self.connection.host.name, self.step
        try:
            with transport_errors(host, "connection lost during a remote step"):
                yield
        except TimeoutError:
            self.close()
            self.connection.tell("step-failed", f"{step} timeout")
            raise CommandTimeout(host, f"remote step did not finish within {self.limit:g}s") from None
        except Interrupted as stopped:
            self.close()
            self.connection.tell("step-failed", f"{step} interrupted")
            raise HostError(host, f"{step}: stopped by Ctrl-C {stopped or 'during the upload'}") from None
        except HostUnreachable:
            self.close()
            self.connection.tell("step-failed", f"{step} lost")
            raise
        except BaseException:
            self.close()
            raise

    def wait(self) -> bool:
        """Read until the command ends or waits for its verdict: whether it waits."""
        with self.mapped():
            self._read()
        return self.records.waiting_since > 0

    def answer(self, commit: bool) -> None:
        """Give a waiting session its batch's verdict ("commit" or "hold" on its stdin); the time it
        waited is added to its deadline."""
        with self.mapped():
            self.records.resume(b"commit\n" if commit else b"hold\n")

    def finish(self) -> ExecResult:
        """Read the session to its end: its exit status and output."""
        channel, host = self.channel, self.connection.host.name
        with self.mapped():
            if self.records.waiting_since:
                raise ProtocolError(host, self.step, "its verdict was never given")  # a caller's mistake
            try:
                self._read()
            finally:
                self.records.give_back()
            self.records.end_input()
            if self.stdout.overflow:
                raise ProtocolError(host, self.step, f"more than {MAX_OUTPUT_BYTES} bytes on stdout")
            if not self.transport.is_active() and not channel.status_event.is_set():
                raise HostUnreachable(host, f"the SSH connection was lost during {self.step}")
            if not channel.status_event.wait(max(0.01, self.records.deadline - time.monotonic())):
                raise TimeoutError()
            status = channel.exit_status
            if status == -1 and not self.transport.is_active():  # no exit status: the connection died
                raise HostUnreachable(host, f"the SSH connection was lost during {self.step}")
        self.close()
        seconds = time.monotonic() - self.started
        self.connection.tell("step-ok" if status == 0 else "step-failed", f"{self.step} {status}")
        log.debug("%s: %s exited %s in %.3fs (%d bytes out)", host, self.step, status, seconds, self.stdout.size)
        return ExecResult(status, self.stdout.text(), self.stderr.text(), seconds)

    def close(self) -> None:
        self.records.give_back()
        self.channel.close()

    def _read(self) -> None:
        """Read both streams until the remote side's EOF (or until it waits for its verdict), waking
        when either has data or closes; the records are read as they come, and hold the deadline (a
        fetch slot's wait moves it: waiting and working have their own bounds)."""
        channel, records = self.channel, self.records
        wake = Wakeup(channel)
        while True:
            wake.arm()
            while channel.recv_ready():
                data = channel.recv(65536)
                self.stdout.add(data)
                records.read(data)
                if self.stdout.overflow or records.waiting_since:
                    return
            while channel.recv_stderr_ready():
                # NUL bytes are the watchdog's heartbeat (lib.sh run_bounded), not diagnostics
                self.stderr.add(channel.recv_stderr(65536).replace(b"\0", b""))
            if channel.eof_received or channel.closed:
                if not channel.recv_ready() and not channel.recv_stderr_ready():
                    return
                continue
            left = records.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError()
            wake.wait(min(left, 1.0))


class _Records:
    """Reads a session's stdout as it arrives for its `@progress` records (the step a script is on:
    validating, a hook, the health check): each is told to the observer, and a fetch gate's
    records take and give back the session's slot (see `HostConnection.run`)."""

    def __init__(
        self,
        connection: HostConnection,
        channel: paramiko.Channel,
        deadline: float,
        gate: threading.Semaphore | None,
        step: str,
        verdict: bool = False,
        offer: bytes | None = None,
    ) -> None:
        self.connection = connection
        self.offer = offer
        self.verdict = verdict
        self.waiting_since = 0.0  # when the host began waiting for its verdict (0: it does not wait)
        self.channel = channel
        self.deadline = deadline
        self.gate = gate
        self.step = step
        self.asked = False  # a session asks for its fetch slot once: a second ask breaks the protocol
        self.holding = False
        self.partial = b""

    def read(self, data: bytes) -> None:
        *lines, partial = (self.partial + data).split(b"\n")
        self.partial = partial[-256:]  # a record line is short; a host's long line is not kept whole
        for line in lines:
            if line.startswith(PROGRESS_RECORD):
                self.record(line[len(PROGRESS_RECORD) :][:64].decode("ascii", "replace"))

    def record(self, name: str) -> None:
        if name == "need-script":
            if self.offer is None:
                raise ProtocolError(self.connection.host.name, self.step, "it asked for a script it was not offered")
            self.answer(self.offer)
            self.offer = None  # asked once
        elif name == "have-script" and self.offer is not None:
            self.offer = None
            end_stdin(self.channel)  # nothing more will be asked
        elif self.gate is not None and name == "fetch-wait":
            if self.asked:
                raise ProtocolError(self.connection.host.name, self.step, "it asked for a fetch slot twice")
            self.asked = True
            self.connection.tell("progress", name)
            self.take_slot(self.gate)
            self.answer(b"go\n")
        elif self.gate is not None and name == "fetched":
            self.give_back()
        elif self.verdict and name == "verdict-wait":
            self.connection.tell("progress", name)
            self.waiting_since = time.monotonic()  # the reading stops here until `resume`
            self.verdict = False  # asked once
        else:
            self.connection.tell("progress", name)

    def resume(self, line: bytes) -> None:
        """The verdict the host waits for; the time it waited does not count against its deadline."""
        self.deadline += time.monotonic() - self.waiting_since
        self.waiting_since = 0.0
        if self.channel.closed or self.channel.eof_received:
            name = self.connection.host.name
            raise HostError(name, f"{self.step}: its session ended while it waited for its batch's verdict")
        self.answer(line)

    def answer(self, line: bytes) -> None:
        """One line (or a script's text) on the session's stdin, then its end; bounded by the step's
        deadline. paramiko's `sendall` would spin forever on a channel whose write side is already
        shut (`send` returns 0)."""
        if self.channel.closed or self.channel.eof_sent:
            raise ProtocolError(self.connection.host.name, self.step, "it asked for an answer after its input ended")
        data = memoryview(line)
        while data:
            self.channel.settimeout(max(0.01, self.deadline - time.monotonic()))
            sent = self.channel.send(data)  # type: ignore[arg-type]  # buffer protocol suffices
            if sent <= 0:
                raise ProtocolError(self.connection.host.name, self.step, "it stopped reading before its answer")
            data = data[sent:]
        end_stdin(self.channel)

    def end_input(self) -> None:
        """End stdin if it was kept open for an answer never asked for: sshd closes the session
        only then (a host with `MaxSessions 1` refuses the next one until it has)."""
        end_stdin(self.channel)

    def take_slot(self, gate: threading.Semaphore) -> None:
        """Wait for a slot of the fetch gate, within its own bound (`timeouts.fetch_wait`): the time
        waited is added to the step's deadline, so hosts late in the queue keep all of `timeouts.stage`."""
        started = time.monotonic()
        limit = self.connection.timeouts.fetch_wait
        while not gate.acquire(timeout=0.2):
            if self.connection.stopping.is_set():
                raise Interrupted("while waiting to fetch")
            if time.monotonic() - started >= limit:
                raise CommandTimeout(
                    self.connection.host.name, f"no fetch slot within {limit:g}s (timeouts.fetch_wait, fetch_parallel)"
                )
        self.holding = True
        self.deadline += time.monotonic() - started

    def give_back(self) -> None:
        if self.holding and self.gate is not None:
            self.holding = False
            self.gate.release()
