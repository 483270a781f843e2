"""Fleet execution: one SSH connection per host for a whole operation, a bounded worker pool,
and one exec session per remote script. The mapping boundary of transport errors: paramiko and
socket errors become `deployer.errors` here (`classify_connect_error`, `transport_errors`), only.

Fabric's `Connection` is used to build and open the paramiko client, but its defaults are
corrected here: host keys are checked against the inventory's known_hosts (parsed once for the
fleet) and unknown or changed keys are refused; every host gets its own connect arguments; all
waits have explicit timeouts.
"""

from __future__ import annotations

import logging
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import paramiko
from fabric import Config, Connection

from deployer.errors import (
    AuthFailed,
    CommandTimeout,
    HostError,
    HostKeyRejected,
    HostUnreachable,
)
from deployer.inventory import Gateway, Host, Inventory
from deployer.known_hosts import KnownHostsPolicy, UnknownHostKey, fingerprint, load_known_hosts
from deployer.protocol import MAX_OUTPUT_BYTES, ProtocolError

log = logging.getLogger(__name__)
# paramiko logs a traceback at ERROR from its transport thread when a handshake fails; the failure
# is already reported per host through our errors, so it must never reach the user's terminal raw.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

T = TypeVar("T")
# (host name, event, detail) from worker threads: "connecting", "connected", "connect-failed",
# "step" (script name), "upload" ("sent/total" bytes), "step-ok"/"step-failed" (script name and exit
# status, or "timeout"/"lost"). For live views.
Observer = Callable[[str, str, str], None]
PROGRESS_RECORD = b"@progress\t"  # see deployer/protocol.py: told to the observer as it arrives
UPLOAD_REPORT_BYTES = 256 * 1024  # how often an upload's progress is told to the observer
IN_FLIGHT = 1024 * 1024  # unconsumed upload bytes allowed at a host's sshd; see HostConnection._send
KEEPALIVE_SECONDS = 15
# A host that vanishes (power cut, network gone) answers nothing, and TCP alone would keep
# retransmitting for about 15 minutes, so a run would hang on it until the step's timeout
# (stage: 900 s). With data always in flight (the keepalives above), TCP_USER_TIMEOUT closes the
# connection once nothing was acknowledged for this long; the host then fails as "connection lost".
DEAD_PEER_SECONDS = 30
# paramiko's transport thread reads its socket with a 0.1 s timeout, to notice its own closing and
# to send keepalives, so every idle connection wakes 10 times a second: 200 idle connections took
# 8.4% of a core of this 2-CPU machine (and the GIL from the workers), 1.0% at 1 s. Once connected
# (the handshake keeps paramiko's timeout), a connection's thread wakes at this pace; closing does
# not wait for it (paramiko closes the socket), and keepalives are due every KEEPALIVE_SECONDS.
IDLE_WAKEUP_SECONDS = 1.0
STDERR_TAIL_BYTES = 64 * 1024  # what is kept of a session's stderr (its end: where the errors are)


class Interrupted(Exception):
    """The operation is being interrupted (Ctrl-C): an upload stops at its next packet."""


def detect_dead_peer(sock: object) -> None:
    """Make a TCP connection fail within DEAD_PEER_SECONDS of its peer vanishing (Linux; elsewhere
    TCP keepalive only, where the platform offers its settings). A tunnel (a channel through a
    gateway) is not a socket: only the gateway's own connection gets this."""
    if not isinstance(sock, socket.socket) or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_SECONDS), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, DEAD_PEER_SECONDS * 1000)


def classify_connect_error(host: Host, exc: BaseException, timeout: float) -> HostError:
    """Map whatever connecting raised to the deployer's error types."""
    where = f"{host.address}:{host.port}"
    if isinstance(exc, UnknownHostKey) and exc.revoked:
        return HostKeyRejected(
            host.name,
            f"host key for {exc.hostname} is REVOKED in known_hosts ({exc.key.get_name()} {fingerprint(exc.key)}); "
            "refusing to connect",
        )
    if isinstance(exc, UnknownHostKey):
        return HostKeyRejected(
            host.name,
            f"host key for {exc.hostname} is not in known_hosts ({exc.key.get_name()} {fingerprint(exc.key)}); "
            "refusing to connect (add it, or use --accept-new-host-keys)",
        )
    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyRejected(
            host.name,
            f"HOST KEY CHANGED for {where}: known_hosts has {fingerprint(exc.expected_key)}, "
            f"the server offered {fingerprint(exc.key)}; refusing to connect",
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return AuthFailed(host.name, f"authentication failed for {host.user}@{where}: {exc}")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return HostUnreachable(host.name, f"connection to {where} timed out after {timeout:g}s (host down or hung?)")
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return HostUnreachable(host.name, f"connection to {where} refused")
    if isinstance(exc, ConnectionRefusedError):
        return HostUnreachable(host.name, f"connection to {where} refused")
    if isinstance(exc, paramiko.SSHException) and "banner" in str(exc).lower():
        return HostUnreachable(
            host.name, f"{where} accepted the connection but sent no SSH banner: timed out after {timeout:g}s (hung?)"
        )
    if isinstance(exc, (paramiko.SSHException, EOFError)):
        return HostUnreachable(host.name, f"SSH handshake with {where} failed: {exc or type(exc).__name__}")
    if isinstance(exc, OSError):
        return HostUnreachable(host.name, f"cannot reach {where}: {exc.strerror or exc}")
    return HostError(host.name, f"unexpected error while connecting to {where}: {type(exc).__name__}: {exc}")


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


def _exec_without_waiting(transport: paramiko.Transport, channel: paramiko.Channel, command: str) -> None:
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


class _Wakeup(threading.Event):
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
        self.observer = observer
        self.stopping = stopping or threading.Event()  # set on Ctrl-C: uploads stop at the next packet

    def _tell(self, event: str, detail: str = "") -> None:
        if self.observer is not None:
            self.observer(self.host.name, event, detail)

    def run(
        self,
        command: str,
        timeout: float | None = None,
        upload: Sequence[bytes | memoryview] | None = None,
        step: str = "command",
        gate: threading.Semaphore | None = None,
    ) -> ExecResult:
        """Run `command` (remote script `step`) in one exec session, optionally streaming `upload` to its stdin.

        stdout and stderr are read apart (records come from stdout only) and bounded: a host that
        sends more than MAX_OUTPUT_BYTES on stdout is refused (ProtocolError), only stderr's tail
        is kept. The whole call is bounded by `timeout` seconds.

        With `gate` (a pull deploy's cap on hosts fetching at once), stdin stays open after
        `upload`: when the script says `@progress fetch-wait` it gets a slot of the gate (waiting
        for one), then "go" on stdin; the slot is given back at `@progress fetched` or when the
        session ends.
        """
        limit = timeout if timeout is not None else self.timeouts.command
        started = time.monotonic()
        deadline = started + limit
        transport = self.connection.client.get_transport()
        if transport is None or not transport.is_active():
            raise HostUnreachable(self.host.name, "the SSH connection was lost")
        with transport_errors(self.host.name, "cannot open a session"):
            channel = transport.open_session(timeout=min(limit, self.timeouts.connect))
        self.sessions += 1
        self._tell("step", step)
        stdout = _Collected(MAX_OUTPUT_BYTES)
        stderr = _Collected(STDERR_TAIL_BYTES, keep_tail=True)
        try:
            with transport_errors(self.host.name, "connection lost during a remote step"):
                channel.settimeout(limit)
                _exec_without_waiting(transport, channel, command)
                if upload:
                    self._send(channel, upload, deadline)
                if gate is None:
                    channel.shutdown_write()
                records = _Records(self, channel, deadline, gate)
                try:
                    self._read(channel, stdout, stderr, deadline, records.read)
                finally:
                    records.give_back()
                if stdout.overflow:
                    raise ProtocolError(self.host.name, step, f"more than {MAX_OUTPUT_BYTES} bytes on stdout")
                if not channel.status_event.wait(max(0.01, deadline - time.monotonic())):
                    raise TimeoutError()
                status = channel.exit_status
                if status == -1 and not transport.is_active():  # no exit status: the connection died
                    raise HostUnreachable(self.host.name, f"the SSH connection was lost during {step}")
        except TimeoutError:
            self._tell("step-failed", f"{step} timeout")
            raise CommandTimeout(self.host.name, f"remote step did not finish within {limit:g}s") from None
        except Interrupted as stopped:
            self._tell("step-failed", f"{step} interrupted")
            raise HostError(self.host.name, f"{step}: stopped by Ctrl-C {stopped or 'during the upload'}") from None
        except HostUnreachable:
            self._tell("step-failed", f"{step} lost")
            raise
        finally:
            channel.close()
        seconds = time.monotonic() - started
        self._tell("step-ok" if status == 0 else "step-failed", f"{step} {status}")
        log.debug("%s: %s exited %s in %.3fs (%d bytes out)", self.host.name, step, status, seconds, stdout.size)
        return ExecResult(status, stdout.text(), stderr.text(), seconds)

    @staticmethod
    def _read(
        channel: paramiko.Channel,
        stdout: _Collected,
        stderr: _Collected,
        deadline: float,
        on_stdout: Callable[[bytes], None] | None = None,
    ) -> None:
        """Read both streams until the remote side's EOF, waking when either has data or closes."""
        wake = _Wakeup(channel)
        while True:
            wake.arm()
            while channel.recv_ready():
                data = channel.recv(65536)
                stdout.add(data)
                if on_stdout is not None:
                    on_stdout(data)
                if stdout.overflow:
                    return
            while channel.recv_stderr_ready():
                stderr.add(channel.recv_stderr(65536))
            if channel.eof_received or channel.closed:
                if not channel.recv_ready() and not channel.recv_stderr_ready():
                    return
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError()
            wake.wait(min(left, 1.0))

    def _send(self, channel: paramiko.Channel, parts: Sequence[bytes | memoryview], deadline: float) -> None:
        """Stream `parts` to the channel, in order; stop quietly if the remote side exits early.

        Paced: at most IN_FLIGHT bytes that the remote command has not consumed yet (as sshd's
        window adjustments tell) are outstanding. sshd grows its channel buffer by copying it
        packet by packet when data arrives faster than the command reads it; a sender that fills
        the whole 2 MiB window makes sshd spend more CPU copying than transferring (a 20-host, 4 MB
        deploy here: 3.3 s and 6.3 core-seconds unpaced, 2.0 s and 3.7 paced). The limit is
        fixed on purpose: sizing it from a measured round trip (the session's open) was tried and
        made local deploys slower, since under load that time is sshd's busyness, not the wire
        (1.27x instead of 0.93x). At 50 ms it still allows 20 MiB/s per host. One SSH packet per
        send, so paramiko never splits a chunk into a full and a tiny packet.
        """
        window = channel.out_window_size
        packet = max(1024, channel.out_max_packet_size - 64)
        total = sum(len(part) for part in parts)
        sent = 0
        told = 0
        try:
            for part in parts:
                data = memoryview(part)
                for offset in range(0, len(data), packet):
                    if self.stopping.is_set():
                        raise Interrupted()
                    if self.observer is not None and (sent - told >= UPLOAD_REPORT_BYTES or sent == 0):
                        self._tell("upload", f"{sent}/{total}")
                        told = sent
                    sent += min(packet, len(data) - offset)
                    with channel.lock:
                        while not channel.closed and window - channel.out_window_size > IN_FLIGHT:
                            left = deadline - time.monotonic()
                            if left <= 0:
                                raise TimeoutError()
                            channel.out_buffer_cv.wait(min(left, 1.0))
                    channel.settimeout(max(0.01, deadline - time.monotonic()))
                    channel.sendall(data[offset : offset + packet])  # type: ignore[arg-type]  # buffer protocol suffices
        except (TimeoutError, Interrupted):
            raise
        except (OSError, EOFError, paramiko.SSHException):
            log.debug("%s: remote side closed stdin early", self.host.name)
            return
        if self.observer is not None and total:
            self._tell("upload", f"{total}/{total}")

    def close(self) -> None:
        self.connection.close()


class _Records:
    """Reads a session's stdout as it arrives for its `@progress` records (the step a script is on:
    validating, a hook, the health check): each is told to the observer, and a fetch gate's
    records take and give back the session's slot (see `HostConnection.run`)."""

    def __init__(
        self, connection: HostConnection, channel: paramiko.Channel, deadline: float, gate: threading.Semaphore | None
    ) -> None:
        self.connection = connection
        self.channel = channel
        self.deadline = deadline
        self.gate = gate
        self.holding = False
        self.partial = b""

    def read(self, data: bytes) -> None:
        *lines, partial = (self.partial + data).split(b"\n")
        self.partial = partial[-256:]  # a record line is short; a host's long line is not kept whole
        for line in lines:
            if line.startswith(PROGRESS_RECORD):
                self.record(line[len(PROGRESS_RECORD) :][:64].decode("ascii", "replace"))

    def record(self, name: str) -> None:
        if self.gate is not None and name == "fetch-wait" and not self.holding:
            self.connection._tell("progress", name)
            self.take_slot(self.gate)
            self.channel.sendall(b"go\n")
            self.channel.shutdown_write()
        elif self.gate is not None and name == "fetched":
            self.give_back()
        else:
            self.connection._tell("progress", name)

    def take_slot(self, gate: threading.Semaphore) -> None:
        while not gate.acquire(timeout=0.2):
            if self.connection.stopping.is_set():
                raise Interrupted("while waiting to fetch")
            if time.monotonic() >= self.deadline:
                raise TimeoutError()
        self.holding = True

    def give_back(self) -> None:
        if self.holding and self.gate is not None:
            self.holding = False
            self.gate.release()


FILES_PER_HOST = 3  # its socket, and headroom (a gateway tunnel, a file being read or written for it)


def ensure_open_files(hosts: int) -> int:
    """Raise this process's soft limit on open files (often 1024, which a fleet of a few hundred
    hosts exhausts: each holds a socket) towards what `hosts` need, within the hard
    limit. Returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 64 + FILES_PER_HOST * hosts
    if soft == resource.RLIM_INFINITY or soft >= need:
        return soft
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < need:
        log.warning("open files are limited to %d (hard limit); %d hosts may need %d", target, hosts, need)
    return target


class Fleet:
    """The open connections of one operation, and a bounded pool to work on them in parallel."""

    def __init__(
        self,
        inventory: Inventory,
        accept_new_host_keys: bool = False,
        parallel: int | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.inventory = inventory
        self.observer = observer
        ensure_open_files(len(inventory.hosts))
        self.parallel = max(1, parallel or inventory.parallel)
        self.known_hosts = load_known_hosts(inventory.known_hosts)
        self.policy = KnownHostsPolicy(self.known_hosts, accept_new_host_keys, threading.Lock())
        self.connections: dict[str, HostConnection] = {}
        self.connections_opened = 0
        self._closed_sessions: dict[str, int] = {}
        self._lock = threading.Lock()
        self._gateway_lock = threading.Lock()
        self.gateways: dict[Gateway, HostConnection | HostError] = {}
        self._pool = ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="deployer")
        self._inflight: set[Future[Any]] = set()
        self.stopping = threading.Event()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _new_connection(self, host: Host, sock: paramiko.Channel | None = None) -> Connection:
        timeouts = self.inventory.timeouts
        config = Config(lazy=True, ssh_config=paramiko.SSHConfig())
        connect_kwargs: dict[str, Any] = {
            "key_filename": [self.inventory.identity_file_of(host)],
            "passphrase": self.inventory.passphrase or None,
            "allow_agent": False,
            "look_for_keys": False,
            "banner_timeout": timeouts.connect,
            "auth_timeout": timeouts.connect,
            "channel_timeout": timeouts.connect,
        }
        if sock is not None:
            connect_kwargs["sock"] = sock
        connection = Connection(
            host.address,
            user=host.user or self.inventory.user,
            port=host.port,
            config=config,
            connect_timeout=max(1, int(timeouts.connect)),
            connect_kwargs=connect_kwargs,
        )
        client = connection.client
        client.set_missing_host_key_policy(self.policy)
        lookup_name = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
        for key_type, key in self.known_hosts.trusted(lookup_name).items():
            client.get_host_keys().add(lookup_name, key_type, key)
        return connection

    def connect(self, host: Host) -> HostConnection:
        """The open connection to `host`, opening it on first use."""
        existing = self.connections.get(host.name)
        if existing is not None:
            return existing
        started = time.monotonic()
        self._tell(host, "connecting", str(host.gateway or ""))
        try:
            handle = self._open(host, self._tunnel(host) if host.gateway is not None else None)
        except HostError:
            self._tell(host, "connect-failed", "unreachable")
            raise
        handle.observer = self.observer
        seconds = time.monotonic() - started
        self._tell(host, "connected", f"{seconds:.2f}")
        via = f" through {host.gateway}" if host.gateway else ""
        log.debug("%s: connected to %s:%s%s in %.3fs", host.name, host.address, host.port, via, seconds)
        with self._lock:
            self.connections[host.name] = handle
            self.connections_opened += 1
        return handle

    def _tell(self, host: Host, event: str, detail: str) -> None:
        if self.observer is not None:
            self.observer(host.name, event, detail)

    def _open(self, host: Host, sock: paramiko.Channel | None) -> HostConnection:
        connection = self._new_connection(host, sock)
        started = time.monotonic()
        try:
            connection.open()
        except Exception as exc:  # noqa: BLE001 - mapped to our error types right here
            connection.close()
            timeout = self.inventory.timeouts.connect
            if time.monotonic() - started >= timeout * 0.9 and isinstance(exc, (paramiko.SSHException, EOFError)):
                exc = TimeoutError()  # the handshake stalled until our timeout, whatever paramiko called it
            raise classify_connect_error(host, exc, timeout) from None
        transport = connection.client.get_transport()
        if transport is not None:
            transport.set_keepalive(KEEPALIVE_SECONDS)
            detect_dead_peer(transport.sock)
            transport.sock.settimeout(IDLE_WAKEUP_SECONDS)
        return HostConnection(host, connection, self.inventory, stopping=self.stopping)

    def _tunnel(self, host: Host) -> paramiko.Channel:
        """A direct-tcpip channel to `host` through its gateway; the gateway is connected once per fleet."""
        gateway = host.gateway
        assert gateway is not None
        with self._gateway_lock:
            opened = self.gateways.get(gateway)
            if opened is None:
                as_host = Host(
                    f"gateway {gateway}",
                    gateway.address,
                    gateway.port,
                    gateway.user or self.inventory.user,
                    identity_file=gateway.identity_file,
                )
                try:
                    opened = self._open(as_host, None)
                except HostError as exc:
                    opened = exc
                self.gateways[gateway] = opened
        if isinstance(opened, HostError):
            raise HostUnreachable(host.name, f"through gateway {gateway}: {opened.reason}")
        transport = opened.connection.client.get_transport()
        if transport is None or not transport.is_active():
            raise HostUnreachable(host.name, f"the connection to gateway {gateway} was lost")
        with transport_errors(host.name, f"gateway {gateway} could not open a tunnel to {host.address}:{host.port}"):
            return transport.open_channel(
                "direct-tcpip", (host.address, host.port), ("127.0.0.1", 0), timeout=self.inventory.timeouts.connect
            )

    def _on(self, host: Host, work: Callable[[HostConnection], T]) -> T | HostError:
        """`work` on `host`'s connection (opened if needed); a HostError is returned, not raised."""
        try:
            return work(self.connect(host))
        except HostError as error:
            return error
        except Exception as error:  # noqa: BLE001 - one host's odd answer (or a bug on its path) fails that host only
            log.debug("unexpected error on %s", host.name, exc_info=True)
            return HostError(host.name, f"unexpected error on this host: {type(error).__name__}: {error}"[:300])

    def _submit(self, host: Host, work: Callable[[HostConnection], T]) -> Future[T | HostError]:
        future = self._pool.submit(self._on, host, work)
        with self._lock:
            self._inflight.add(future)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future[Any]) -> None:
        with self._lock:
            self._inflight.discard(future)

    def settle(self) -> None:
        """After an interruption: stop uploads, drop queued work, and wait for the steps already running
        on hosts to end (each is bounded by its timeout), so nothing still acts after we release
        the lock. A further Ctrl-C stops the waiting."""
        self.stopping.set()
        with self._lock:
            pending = list(self._inflight)
        for future in pending:
            future.cancel()
        try:
            wait(pending)
        except KeyboardInterrupt:
            log.warning("stopped waiting for the steps still running on hosts")
        self.stopping.clear()

    def connect_all(self) -> dict[str, Future[HostConnection | HostError]]:
        """Start connecting to every host in the pool; each future gives the connection or the error."""
        return {host.name: self._submit(host, lambda c: c) for host in self.inventory.hosts}

    def connected(self) -> list[str]:
        """Hosts with an open connection now."""
        with self._lock:
            return sorted(self.connections)

    def map(
        self, work: Callable[[HostConnection], T], hosts: list[Host] | None = None
    ) -> Iterator[tuple[Host, T | HostError]]:
        """Run `work` on each host's connection in the pool; yield (host, result or error) as each ends."""
        targets = list(self.inventory.hosts if hosts is None else hosts)
        futures = {self._submit(host, work): host for host in targets}
        for future in as_completed(futures):
            yield futures[future], future.result()

    def sessions_by_host(self) -> dict[str, int]:
        """Exec sessions opened per host so far (kept after close, for reports and budget tests)."""
        counts = dict(self._closed_sessions)
        counts.update({name: handle.sessions for name, handle in self.connections.items()})
        return counts

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for name, handle in self.connections.items():
            self._closed_sessions[name] = handle.sessions
            handle.close()
        self.connections.clear()
        for gateway in self.gateways.values():
            if isinstance(gateway, HostConnection):
                gateway.close()
        self.gateways.clear()
