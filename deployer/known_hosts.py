"""known_hosts files as OpenSSH writes them, read once per operation, and the policy that applies them.

Handled: comments and blank lines, several names per line, `[host]:port` and IPv6 names, hashed
names (`|1|salt|hash`, from `ssh-keygen -H` or `HashKnownHosts yes`), any whitespace between fields.
Markers: a `@revoked` key is refused wherever it is offered (OpenSSH: "must not ever be accepted");
`@cert-authority` lines are skipped with a warning (host certificates are not verified here, so
hosts trusted only through a CA need their own key line). A line that cannot be read is skipped
with a warning naming the file and line; it never stops the tool.
"""

from __future__ import annotations

import binascii
import logging
import threading
from dataclasses import dataclass, field

import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

log = logging.getLogger(__name__)


@dataclass
class KnownHosts:
    """The trusted keys (paramiko matches plain and hashed names), the revoked ones, and what was skipped."""

    path: str
    keys: paramiko.HostKeys = field(default_factory=paramiko.HostKeys)
    revoked: set[tuple[str, str]] = field(default_factory=set)  # (key type, base64)
    warnings: list[str] = field(default_factory=list)

    def is_revoked(self, key: paramiko.PKey) -> bool:
        return (key.get_name(), key.get_base64()) in self.revoked

    def trusted(self, name: str) -> dict[str, paramiko.PKey]:
        """The keys known for `name` (`host` or `[host]:port`), revoked ones left out."""
        found = self.keys.lookup(name)
        if found is None:
            return {}
        return {key_type: key for key_type, key in found.items() if not self.is_revoked(key)}


def _entry(text: str) -> HostKeyEntry | None:
    try:
        return HostKeyEntry.from_line(text)
    except (InvalidHostKey, paramiko.SSHException, binascii.Error, ValueError, TypeError, IndexError):
        return None


def parse_known_hosts(text: str, path: str = "known_hosts") -> KnownHosts:
    """Parse known_hosts `text` (see the module docstring); never raises on a bad line."""
    known = KnownHosts(path)
    for number, raw in enumerate(text.splitlines(), 1):
        line = " ".join(raw.split())
        if not line or line.startswith("#"):
            continue
        marker = ""
        if line.startswith("@"):
            marker, _, line = line.partition(" ")
        entry = _entry(line)
        if marker == "@cert-authority":
            known.warnings.append(
                f"{path}:{number}: @cert-authority line skipped: host certificates are not verified by this "
                "tool; add the hosts' own keys"
            )
            continue
        if marker and marker != "@revoked":
            known.warnings.append(f"{path}:{number}: unknown marker {marker[:40]!r}; line skipped")
            continue
        if entry is None or entry.key is None:
            known.warnings.append(f"{path}:{number}: not a known_hosts line this tool can read; skipped")
            continue
        if marker == "@revoked":
            known.revoked.add((entry.key.get_name(), entry.key.get_base64()))
            continue
        for name in entry.hostnames:
            known.keys.add(name, entry.key.get_name(), entry.key)
    return known


def load_known_hosts(path: str) -> KnownHosts:
    """Read `path` (a missing file is an empty one: every host is then unknown and refused)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except FileNotFoundError:
        return KnownHosts(path)
    known = parse_known_hosts(text, path)
    for warning in known.warnings:
        log.warning("%s", warning)
    return known


class UnknownHostKey(paramiko.SSHException):
    def __init__(self, hostname: str, key: paramiko.PKey, revoked: bool = False) -> None:
        self.hostname = hostname
        self.key = key
        self.revoked = revoked
        super().__init__(hostname)


class KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
    """Called for hosts whose offered key is not trusted: refuse (always for a revoked key), or
    (opt-in) add it like OpenSSH's accept-new."""

    def __init__(self, known: KnownHosts, accept_new: bool, lock: threading.Lock) -> None:
        self.known = known
        self.path = known.path
        self.accept_new = accept_new
        self.lock = lock

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if self.known.is_revoked(key):
            raise UnknownHostKey(hostname, key, revoked=True)
        if not self.accept_new:
            raise UnknownHostKey(hostname, key)
        with self.lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        log.warning("added new host key for %s (%s %s) to %s", hostname, key.get_name(), fingerprint(key), self.path)


def fingerprint(key: paramiko.PKey) -> str:
    return str(key.fingerprint) if hasattr(key, "fingerprint") else key.get_base64()[:16]
