"""Release signatures with OpenSSH's own tools: `ssh-keygen -Y sign` and `ssh-keygen -Y verify`.

Checked three times: by the controller before any host is contacted (`check_artifact`, here), by
every host itself inside its staging session against its own copy of who may sign (`host_signers`),
and, for a rollback or `--to`, the signer each host recorded is checked against today's allowed
signers and revoked keys (`still_trusted`, here). A signature is a detached `ARTIFACT.sig` in a namespace of its
own (a signature made for another purpose, e.g. git commits, never verifies as a release's).
Verification says *why* a signature is not accepted (unsigned, another namespace, not these bytes, a
key nobody trusts, a key outside its validity window or not allowed this namespace, a revoked key)
and, when it is, who signed: the principal from allowed_signers and the key's SHA256 fingerprint.
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
from collections.abc import Sequence
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


@dataclass(frozen=True)
class Signature:
    """A detached signature the controller accepted: who made it and its text (sent to each host)."""

    signer: Signer
    text: str


MAX_SIGNATURE = 8 * 1024


def signature_path(artifact: str) -> str:
    """Where an artifact's detached signature is looked for: beside it, `.sig` added."""
    return artifact + ".sig"


def _keygen(*args: str, data: str | None = None) -> subprocess.CompletedProcess[bytes]:
    """ssh-keygen with the file `data` as its stdin: it reads the file itself (an artifact of any size
    costs this process no memory)."""
    try:
        with open(data or os.devnull, "rb") as stdin:
            return subprocess.run(["ssh-keygen", *args], stdin=stdin, capture_output=True, timeout=TIMEOUT, check=False)
    except FileNotFoundError as error:
        if data and error.filename == data:
            raise InputError(f"cannot read {data}: {error.strerror}") from None
        raise InputError("ssh-keygen is not installed here (Debian: apt-get install openssh-client)") from None


def sign(artifact: str, key: str, namespace: str = NAMESPACE, out: str | None = None) -> str:
    """Sign `artifact` with `key` (a private key file, or the public key of one held by ssh-agent);
    the signature goes to `out` (default ARTIFACT.sig), written whole or not at all."""
    out = out or signature_path(artifact)
    if not os.path.isfile(artifact):
        raise InputError(f"cannot read {artifact}: not a file")
    try:
        done = _keygen("-Y", "sign", "-f", key, "-n", namespace, data=artifact)
    except PermissionError as error:
        raise InputError(f"cannot read {artifact}: {error.strerror}") from None
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


@dataclass(frozen=True)
class _Entry:
    """One allowed_signers line that lists a given key: `principals options key_type blob [comment]`."""

    principals: str
    options: str
    key_type: str
    blob: str
    line: str


def _entries_for(allowed_signers: str, fingerprint: str) -> list[_Entry]:
    """The lines of allowed_signers that list the key with this fingerprint (unparsable lines are
    skipped: ssh-keygen, which decides, skips them too)."""
    entries = []
    for line in Path(allowed_signers).read_text(errors="replace").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        for index, word in enumerate(words[2:], start=2):
            if _blob_fingerprint(word) == fingerprint:
                entries.append(_Entry(words[0], " ".join(words[1 : index - 1]), words[index - 1], word, line))
                break
    return entries


def _why_not_allowed(allowed_signers: str, fingerprint: str, namespace: str) -> str:
    """Why allowed_signers does not let this key sign now: its entries for the key, explained."""
    entries = _entries_for(allowed_signers, fingerprint)
    if not entries:
        return f"the key that signed it ({fingerprint}) is not in {allowed_signers}"
    principal, options = entries[0].principals, entries[0].options
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
    checked = _keygen("-Y", "check-novalidate", "-n", namespace, "-s", signature, data=artifact)
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

    def verified(principal: str, revocations: bool) -> bool:
        args = ["-Y", "verify", "-f", allowed_signers, "-I", principal, "-n", namespace, "-s", signature]
        return _keygen(*args, *(["-r", revoked] if revocations and revoked else []), data=artifact).returncode == 0

    # One ssh-keygen per principal, revoked keys included; only a refusal is looked at again
    # without them, to tell a revoked key from one that was never allowed.
    principal = next((principal for principal in principals if verified(principal, True)), "")
    if not principal:
        if revoked and (unrevoked := next((p for p in principals if verified(p, False)), "")):
            raise SignatureRefused(f"{unrevoked}'s key {fingerprint} is revoked ({revoked})")
        raise SignatureRefused(_why_not_allowed(allowed_signers, fingerprint, namespace))
    return Signer(principal, fingerprint, kind)


def check_artifact(
    all_settings: Sequence[Signatures], tarball: str, source: str, given: str | None
) -> Signature | None:
    """The artifact's signature, checked before anything is contacted against every `signatures` the
    targeted hosts follow (the inventory's, a group's own); its signer as the first names it.
    With `signatures.require` an unsigned artifact is refused; a signature that is there is
    always checked (a bad one is refused whether required or not). `tarball` is what is sent (a
    folder artifact is packed first: only a .tar.gz can carry a signature)."""
    if not all_settings:
        if given:
            raise InputError("--signature given, but the inventory has no `signatures` section to say who may sign")
        return None
    signature = given or (signature_path(source) if os.path.isfile(source) else "")
    if not signature or not os.path.isfile(signature):
        if not any(settings.require for settings in all_settings):
            return None
        if os.path.isdir(source):
            raise SignatureRefused(
                f"{source} is a folder: signed releases are .tar.gz files signed with `deployer sign`"
            )
        raise SignatureRefused(f"{source} is not signed (no {signature}) and the inventory requires signed releases")
    text = read_signature(signature)
    signers = [
        verify(tarball, signature, settings.allowed_signers, settings.namespace, settings.revoked or None)
        for settings in all_settings
    ]
    return Signature(signers[0], text)


def read_signature(signature: str) -> str:
    """The armored text of an ssh signature file (SignatureRefused when it is not one)."""
    try:
        text = Path(signature).read_bytes()[: MAX_SIGNATURE + 1].decode("ascii")
    except (OSError, UnicodeDecodeError):
        raise SignatureRefused(f"{signature} is not a readable ssh signature") from None
    if len(text) > MAX_SIGNATURE or not text.startswith("-----BEGIN SSH SIGNATURE-----"):
        raise SignatureRefused(f"{signature} is not an ssh signature (-----BEGIN SSH SIGNATURE-----)")
    return text.strip()


def check_remote_signature(all_settings: Sequence[Signatures], given: str | None) -> Signature | None:
    """For an artifact the controller never holds (given as a URL): the signature is passed on and
    checked by every host against its own copy of who may sign (who signed is what they record)."""
    if not all_settings:
        if given:
            raise InputError("--signature given, but the inventory has no `signatures` section to say who may sign")
        return None
    if not given:
        if any(settings.require for settings in all_settings):
            raise SignatureRefused(
                "the artifact is a URL and the inventory requires signed releases: give its signature (--signature)"
            )
        return None
    if not os.path.isfile(given):
        raise SignatureRefused(f"no signature file {given}")
    return Signature(Signer("", "", ""), read_signature(given))


def still_trusted(settings: Signatures, principal: str, fingerprint: str) -> str:
    """Why a release signed by `principal` with key `fingerprint` (as its host recorded when it
    verified the bytes) may no longer go live under `settings`; "" when it still may.

    A signature that verified once keeps verifying for the same bytes and key: what can change is
    the trust in the key. So this checks that allowed_signers still lists that key for that
    principal, allowed this namespace, and that the revoked keys do not hold it. Validity windows
    are not re-checked: a release signed inside its key's window stays signed after it closes.
    """
    entries = _entries_for(settings.allowed_signers, fingerprint)
    if not entries:
        return f"its signer's key ({principal}, {fingerprint}) is no longer in {settings.allowed_signers}"
    listed = [entry for entry in entries if principal in entry.principals.split(",")]
    if not listed:
        return f"its signer's key {fingerprint} is no longer allowed for {principal} in {settings.allowed_signers}"
    entry = listed[0]
    match = re.search(r'namespaces="([^"]*)"', entry.line, re.IGNORECASE)
    if match and settings.namespace not in match.group(1).split(","):
        return f"{principal}'s key {fingerprint} may no longer sign {settings.namespace!r}"
    if settings.revoked and _revoked(settings.revoked, f"{entry.key_type} {entry.blob}"):
        return f"{principal}'s key {fingerprint} is revoked ({settings.revoked})"
    return ""


def _revoked(revoked: str, public_key: str) -> bool:
    """Whether the revoked keys file holds this key: a KRL asked with `ssh-keygen -Q`, or (what
    `ssh-keygen -Y verify -r` also takes) a list of public keys, one per line."""
    data = Path(revoked).read_bytes()
    if not data.startswith(b"SSHKRL\n"):
        blob = public_key.split()[1]
        return any(blob in line.split()[:3] for line in data.decode(errors="replace").splitlines())
    with tempfile.NamedTemporaryFile("w", suffix=".pub") as handle:
        handle.write(public_key + "\n")
        handle.flush()
        done = _keygen("-Q", "-f", revoked, handle.name)
    said = (done.stdout + done.stderr).decode(errors="replace")
    if "REVOKED" in said:
        return True
    if done.returncode == 0:
        return False
    raise InputError(f"signatures.revoked: ssh-keygen cannot read {revoked}: {said.strip()[:200]}")
