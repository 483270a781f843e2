"""What each host keeps of who may sign, so it can check signatures on its own, and which of the
releases it holds may still go live.

The copy lives in `.deployer/signers/` (placed by the first signed deploy or `deployer place-signers`,
checked by remote/stage.sh's `verify_signature`); its size limits are the inventory's
(`inventory.model.MAX_ALLOWED_SIGNERS`). Whether a recorded signer is still trusted is judged by
`signing.still_trusted`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deployer.errors import InputError
from deployer.inventory.model import MAX_ALLOWED_SIGNERS, MAX_REVOKED
from deployer.scripts import octal_escaped
from deployer.signing import still_trusted

if TYPE_CHECKING:
    from deployer.inventory.model import Inventory, Signatures
    from deployer.state import HostState


@dataclass(frozen=True)
class HostCopy:
    """The files a host keeps in `.deployer/signers/` so it can check signatures on its own: the
    allowed signers, the revoked keys (b"" for none) and the policy line (require, namespace)."""

    allowed_signers: bytes
    revoked: bytes
    policy: bytes

    @property
    def digests(self) -> str:
        """The sha256 of each file as the host reports them ("-" for no revoked keys): remote signers_state."""
        files = (self.allowed_signers, self.revoked, self.policy)
        return " ".join(hashlib.sha256(data).hexdigest() if data else "-" for data in files)

    def place_options(self) -> dict[str, str]:
        """The options that make a host keep this copy (remote `place_signers`, in stage and finish)."""
        return {
            "signers_place": octal_escaped(self.allowed_signers),
            "revoked_place": octal_escaped(self.revoked),
            "policy_place": octal_escaped(self.policy),
        }


def host_copy(settings: Signatures) -> HostCopy:
    """What hosts following `settings` keep, read from the inventory's files (InputError if unreadable)."""

    def read(path: str, key: str, limit: int) -> bytes:
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise InputError(f"signatures.{key}: cannot read {path}: {error.strerror}") from None
        if len(data) > limit:
            raise InputError(f"signatures.{key}: {path} is {len(data)} bytes; hosts take at most {limit}")
        return data

    allowed = read(settings.allowed_signers, "allowed_signers", MAX_ALLOWED_SIGNERS)
    revoked = read(settings.revoked, "revoked", MAX_REVOKED) if settings.revoked else b""
    policy = f"require={'yes' if settings.require else 'no'} namespace={settings.namespace}\n".encode()
    return HostCopy(allowed, revoked, policy)


def host_copies(inventory: Inventory, names: Iterable[str]) -> dict[str, HostCopy]:
    """What each named host's own copy of who may sign must be (hosts that follow no `signatures`
    are left out); each inventory file is read once."""
    read: dict[Signatures, HostCopy] = {}
    copies = {}
    for name in names:
        settings = inventory.signatures_of(inventory.host(name))
        if settings is not None:
            copies[name] = read[settings] if settings in read else read.setdefault(settings, host_copy(settings))
    return copies


def untrusted_releases(inventory: Inventory, states: Mapping[str, HostState]) -> dict[tuple[str, str], str]:
    """(host, release) -> why that release may not go live there again (a rollback, `--to`): its
    signer is no longer trusted, or it was staged unsigned where signed releases are required."""
    found: dict[tuple[str, str], str] = {}
    judged: dict[tuple[Signatures, str, str], str] = {}
    for name, state in states.items():
        settings = inventory.signatures_of(inventory.host(name))
        if settings is None:
            continue
        for info in state.releases.values():
            if info.signer:
                key = (settings, info.signer, info.signer_fingerprint)
                if key not in judged:
                    judged[key] = still_trusted(settings, info.signer, info.signer_fingerprint)
                why = judged[key]
            else:
                why = "it was staged without a signature, and signed releases are required" if settings.require else ""
            if why:
                found[(name, info.release_id)] = why
    return found
