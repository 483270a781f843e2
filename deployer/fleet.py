"""Fleet execution: one SSH connection per host for a whole operation (opened here, directly or
through a gateway), and a bounded worker pool over them; each connection runs scripts as exec
sessions (`deployer.connection`). The mapping boundary of connecting's errors: paramiko and socket
errors raised while connecting become `deployer.errors` here (`classify_connect_error`), only.

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
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed, wait
from typing import Any, TypeVar

import paramiko
from fabric import Config, Connection

from deployer.connection import HostConnection, Observer, transport_errors
from deployer.errors import (
    AuthFailed,
    HostError,
    HostKeyRejected,
    HostUnreachable,
)
from deployer.inventory import Gateway, Host, Inventory
from deployer.known_hosts import KnownHostsPolicy, UnknownHostKey, fingerprint, load_known_hosts

log = logging.getLogger(__name__)
# paramiko logs a traceback at ERROR from its transport thread when a handshake fails; the failure
# is already reported per host through our errors, so it must never reach the user's terminal raw.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

T = TypeVar("T")
KEEPALIVE_SECONDS = 15
KEEPALIVE_MISSES = 3  # unanswered keepalives in a row before a connection counts as lost (Liveness)
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


class Liveness:
    """Keepalives that expect an answer, on every transport (OpenSSH's ServerAliveInterval and
    ServerAliveCountMax): a host reached through a gateway is a channel, not a socket, so TCP's own
    keepalive cannot tell that it went silent (its packets dropped while the gateway stays up).
    paramiko's `set_keepalive` asks for no reply; here each keepalive asks for one, and a transport
    that answered none of the last KEEPALIVE_MISSES is closed: its steps fail as "connection lost"
    within about a minute, however the host is reached. Runs in the transport's own thread (paramiko
    calls it when nothing was sent for KEEPALIVE_SECONDS)."""

    def __init__(self, transport: paramiko.Transport, name: str) -> None:
        self.transport = transport
        self.name = name
        self.answered = threading.Event()
        self.answered.set()
        self.misses = 0

    def start(self) -> None:
        self.transport.packetizer.set_keepalive(KEEPALIVE_SECONDS, self.probe)

    def probe(self, _packetizer: object = None) -> None:
        self.misses = 0 if self.answered.is_set() else self.misses + 1
        if self.misses >= KEEPALIVE_MISSES:
            log.debug("%s: no answer to %d keepalives: closing the connection", self.name, self.misses)
            self.transport.close()
            return
        self.answered.clear()
        # any answer to a global request (sshd: "failure", it does not know the name) sets this
        self.transport.completion_event = self.answered
        message = paramiko.Message()
        message.add_byte(paramiko.common.cMSG_GLOBAL_REQUEST)
        message.add_string("keepalive@openssh.com")
        message.add_boolean(True)
        self.transport._send_user_message(message)  # type: ignore[attr-defined]  # noqa: SLF001 - see the class


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
        sessions_expected: int = 1,
    ) -> None:
        self.inventory = inventory
        self.observer = observer
        self.sessions_expected = sessions_expected  # per host: see HostConnection.sessions_expected
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
        handle.sessions_expected = self.sessions_expected
        handle.ask_ahead()  # for the operation's first step here
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
            Liveness(transport, host.name).start()
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
