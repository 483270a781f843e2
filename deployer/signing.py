"""Release signatures with OpenSSH's own tools: `ssh-keygen -Y sign` and `ssh-keygen -Y verify`.

Checked by the controller before any host is contacted (`check_artifact`, from the inventory's
`signatures`); hosts do not verify on their own yet, and rollbacks do not re-check (issue 17).
A signature is a detached `ARTIFACT.sig` in a namespace of its own (a signature made for another
purpose, e.g. git commits, never verifies as a release's). Verification says *why* a signature is
not accepted (unsigned, another namespace, not these bytes, a key nobody trusts, a key outside its
validity window or not allowed this namespace, a revoked key) and, when it is, who signed: the
principal from allowed_signers and the key's SHA256 fingerprint.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployer.errors import InputError

if TYPE_CHECKING:
    from deployer.inventory.model import Signatures

NAMESPACE = "deployer-release"
GOOD = re.compile(
    r'^Good "(?P<namespace>[^"]*)" signature (?:for (?P<principal>.+) )?with (?P<kind>\S+) key (?P<fp>SHA256:\S+)$'
)
TIMEOUT = 60


class SignatureRefused(InputError):
    """A signature that is missing or does not verify; the message says which and why."""


@dataclass(frozen=True)
class Signer:
    principal: str
    fingerprint: str  # SHA256:..., as `ssh-keygen -l` prints it
    key_type: str  # ED25519, ECDSA, RSA

    def as_dict(self) -> dict[str, Any]:
        return {"principal": self.principal, "fingerprint": self.fingerprint, "key_type": self.key_type}


def signature_path(artifact: str) -> str:
    """Where an artifact's detached signature is looked for: beside it, `.sig` added."""
    return artifact + ".sig"


def _keygen(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["ssh-keygen", *args], input=stdin, capture_output=True, timeout=TIMEOUT, check=False)
    except FileNotFoundError:
        raise InputError("ssh-keygen is not installed here (Debian: apt-get install openssh-client)") from None


def sign(artifact: str, key: str, namespace: str = NAMESPACE, out: str | None = None) -> str:
    """Sign `artifact` with `key` (a private key file, or the public key of one held by ssh-agent);
    the signature goes to `out` (default ARTIFACT.sig), written whole or not at all."""
    out = out or signature_path(artifact)
    try:
        data = Path(artifact).read_bytes()
    except OSError as error:
        raise InputError(f"cannot read {artifact}: {error.strerror}") from None
    done = _keygen("-Y", "sign", "-f", key, "-n", namespace, stdin=data)
    if done.returncode != 0 or b"BEGIN SSH SIGNATURE" not in done.stdout:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        raise InputError(f"ssh-keygen could not sign {artifact} with {key}: {why[-1] if why else 'no signature'}")
    folder = os.path.dirname(os.path.abspath(out))
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".sig-", delete=False) as handle:
        handle.write(done.stdout)
    os.replace(handle.name, out)
    return out


def _blob_fingerprint(blob: str) -> str:
    try:
        raw = base64.b64decode(blob, validate=True)
    except binascii.Error:
        return ""
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def _why_not_allowed(allowed_signers: str, fingerprint: str, namespace: str) -> str:
    """Why allowed_signers does not let this key sign now: its entries for the key, explained."""
    entries = []
    for line in Path(allowed_signers).read_text(errors="replace").splitlines():
        words = shlex.split(line, comments=True) if line.strip() and not line.lstrip().startswith("#") else []
        blobs = [i for i, word in enumerate(words) if i > 0 and _blob_fingerprint(word) == fingerprint]
        if blobs:
            entries.append((words[0], " ".join(words[1 : blobs[0] - 1])))
    if not entries:
        return f"the key that signed it ({fingerprint}) is not in {allowed_signers}"
    principal, options = entries[0]
    if "namespaces=" in options and namespace not in options:
        return f"{principal}'s key {fingerprint} may not sign {namespace!r} ({options})"
    if "valid-" in options:
        return f"{principal}'s key {fingerprint} is outside its validity window ({options})"
    return f"{principal}'s key {fingerprint} is not allowed by {allowed_signers} ({options or 'no options'})"


def verify(
    artifact: str,
    signature: str,
    allowed_signers: str,
    namespace: str = NAMESPACE,
    revoked: str | None = None,
) -> Signer:
    """Who signed `artifact`, checked against `allowed_signers` (and `revoked`); SignatureRefused otherwise."""
    if not os.path.isfile(signature):
        raise SignatureRefused(f"{artifact} is not signed: no {signature}")
    data = Path(artifact).read_bytes()
    checked = _keygen("-Y", "check-novalidate", "-n", namespace, "-s", signature, stdin=data)
    said = (checked.stdout + checked.stderr).decode(errors="replace")
    if checked.returncode != 0:
        if "namespace does not match" in said:
            raise SignatureRefused(f"{signature} was made for another purpose (not namespace {namespace!r})")
        if "incorrect signature" in said:
            raise SignatureRefused(
                f"{signature} is not a signature of these bytes ({artifact} changed, or another file's)"
            )
        raise SignatureRefused(f"{signature} is not a usable signature: {said.strip().splitlines()[-1:] or ['?']}")
    good = next((m for m in map(GOOD.match, said.splitlines()) if m), None)
    if good is None:
        raise SignatureRefused(f"ssh-keygen said something unexpected about {signature}: {said.strip()[:200]}")
    fingerprint, kind = good.group("fp"), good.group("kind")
    found = _keygen("-Y", "find-principals", "-s", signature, "-f", allowed_signers)
    principals = [p for p in found.stdout.decode(errors="replace").splitlines() if p.strip()]
    allowed = [
        principal
        for principal in principals
        if _keygen(
            "-Y", "verify", "-f", allowed_signers, "-I", principal, "-n", namespace, "-s", signature, stdin=data
        ).returncode
        == 0
    ]
    if not allowed:
        raise SignatureRefused(_why_not_allowed(allowed_signers, fingerprint, namespace))
    principal = allowed[0]
    if revoked:
        final = _keygen(
            "-Y",
            "verify",
            "-f",
            allowed_signers,
            "-I",
            principal,
            "-n",
            namespace,
            "-s",
            signature,
            "-r",
            revoked,
            stdin=data,
        )
        if final.returncode != 0:
            raise SignatureRefused(f"{principal}'s key {fingerprint} is revoked ({revoked})")
    return Signer(principal, fingerprint, kind)


def check_artifact(settings: Signatures | None, tarball: str, source: str, given: str | None) -> Signer | None:
    """The artifact's signer, checked before anything is contacted. With `signatures.require` an
    unsigned artifact is refused; a signature that is there is always checked (a bad one is refused
    whether required or not). `tarball` is what is sent (a folder artifact is packed first: only a
    .tar.gz can carry a signature)."""
    if settings is None:
        if given:
            raise InputError("--signature given, but the inventory has no `signatures` section to say who may sign")
        return None
    signature = given or (signature_path(source) if os.path.isfile(source) else "")
    if not signature or not os.path.isfile(signature):
        if not settings.require:
            return None
        if os.path.isdir(source):
            raise SignatureRefused(
                f"{source} is a folder: signed releases are .tar.gz files signed with `deployer sign`"
            )
        raise SignatureRefused(f"{source} is not signed (no {signature}) and the inventory requires signed releases")
    return verify(tarball, signature, settings.allowed_signers, settings.namespace, settings.revoked or None)
