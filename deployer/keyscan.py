"""Host keys fetched with OpenSSH's ssh-keyscan, and their fingerprints as OpenSSH prints them.

Used where a known_hosts file is first written (`deployer init`, the Vagrant inventory): a key
scanned over the network is only as good as the check that follows (a fingerprint confirmed by a
person, a list of fingerprints from the hosts' own consoles or provisioning).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import subprocess
from concurrent.futures import ThreadPoolExecutor

from deployer.errors import InputError

KEY_TYPES = "ed25519,ecdsa,rsa"
SCANS_AT_ONCE = 16
TIMEOUT = 5


def key_fingerprint(known_hosts_line: str) -> str:
    """OpenSSH's SHA256 fingerprint of the key on a known_hosts line (as `ssh-keygen -l` prints it)."""
    try:
        blob = base64.b64decode(known_hosts_line.split()[2], validate=True)
    except (IndexError, binascii.Error):
        raise InputError(f"not a known_hosts line: {known_hosts_line[:80]!r}") from None
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def key_type(known_hosts_line: str) -> str:
    """`ED25519`, `ECDSA`, `RSA` (as `ssh-keygen -l` names them) for a known_hosts line."""
    name = known_hosts_line.split()[1]
    return {"ssh-ed25519": "ED25519", "ssh-rsa": "RSA"}.get(name, "ECDSA" if name.startswith("ecdsa") else name)


def scan_one(address: str, port: int, key_types: str = KEY_TYPES) -> list[str]:
    """The known_hosts lines ssh-keyscan gets from address:port (empty when it does not answer)."""
    try:
        done = subprocess.run(
            ["ssh-keyscan", "-T", str(TIMEOUT), "-t", key_types, "-p", str(port), address],
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 6,
            check=False,
        )
    except FileNotFoundError:
        raise InputError("ssh-keyscan is not installed here (Debian: apt-get install openssh-client)") from None
    except subprocess.TimeoutExpired:
        return []
    return sorted(line for line in done.stdout.splitlines() if line.strip() and not line.startswith("#"))


def scan(targets: list[tuple[str, int]], key_types: str = KEY_TYPES) -> dict[tuple[str, int], list[str]]:
    """Keys of every (address, port), scanned a few at a time; a target that did not answer maps to []."""
    with ThreadPoolExecutor(max_workers=max(1, min(SCANS_AT_ONCE, len(targets)))) as pool:
        found = pool.map(lambda target: scan_one(target[0], target[1], key_types), targets)
        return dict(zip(targets, found, strict=True))
