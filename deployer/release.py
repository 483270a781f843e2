"""Release ids and artifacts: what gets deployed, under which name, checked before it leaves.

A release id is chosen once per deploy for the whole fleet (UTC time plus a digest prefix),
so every host has the same name for the same release. The artifact is packed (when given a
folder), checked member by member, and hashed exactly once.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import posixpath
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import yaml

from deployer import revision
from deployer.errors import ArtifactError, InputError
from deployer.revision import Revision
from deployer.scratch import Scratch
from deployer.signing import Signature, Signer, check_artifact, check_remote_signature

if TYPE_CHECKING:
    from deployer.inventory.model import Signatures

RELEASE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
URL_RE = re.compile(r"^https?://[!-~]{1,2040}$")  # printable ASCII, no spaces: it travels as data to hosts
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
RESERVED_NAMES = frozenset({"previousVersion"})


def is_release_id(value: str) -> bool:
    return bool(RELEASE_ID_RE.fullmatch(value)) and value not in {".", ".."}


def check_release_id(value: str) -> str:
    """Return `value` if it is a usable release id, else raise an InputError saying why."""
    if not is_release_id(value):
        raise InputError(
            f"release id {value!r} is not valid: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def check_release_name(value: str, flag: str) -> str:
    """`value` if it can name a release (an id, a version label such as 1.4.2+build.5, a commit
    prefix), else an InputError: a name is looked up among the fleet's releases, never used as a path."""
    if is_release_id(value) or revision.VERSION.match(value):
        return value
    raise InputError(
        f"{flag} {value!r} is not valid: it is not a release id, version or commit (use letters, digits, '.', "
        "'_', '+' or '-', starting with a letter or digit)"
    )


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def check_url(url: str, where: str) -> str:
    """`url` if hosts can be asked to fetch it (http or https, printable, no spaces), else an InputError."""
    if not URL_RE.fullmatch(url):
        raise InputError(f"{where}: {shown_url(url)!r} is not an http:// or https:// URL without spaces")
    return url


def shown_url(url: str) -> str:
    """A URL as output shows it: without its query (a presigned URL's query is a credential)."""
    base, query, _ = url.partition("?")
    return base[:200] + ("?..." if query else "")


def new_release_id(now: datetime, digest: str, taken: set[str]) -> str:
    """A fresh id sorting by time: `20261122T043100Z-<digest8>`, suffixed `.N` if already taken."""
    base = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + digest[:8]
    candidate, counter = base, 1
    while candidate in taken:
        counter += 1
        candidate = f"{base}.{counter}"
    return candidate


MANIFEST_NAME = "release.yml"
MANIFEST_KEYS = {"schema_version", "min_schema", "version", "commit"}


@dataclass(frozen=True)
class Manifest:
    """What a release declares about the database schema in its `release.yml`.

    schema_version: the schema its migrations bring the database to. min_schema: the oldest schema
    it is compatible with both ways: its code runs against a database at min_schema, and code
    written for min_schema still runs against the database it leaves (expand/contract).
    """

    schema_version: int
    min_schema: int


def parse_manifest(text: bytes, source: str) -> tuple[Manifest | None, Revision]:
    """The schema a release.yml declares (None without schema_version) and its version/commit."""
    where = f"artifact {source}: {MANIFEST_NAME}"
    try:
        data: Any = yaml.safe_load(text.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{where}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{where}: expected a mapping (schema_version, min_schema, version, commit)")
    unknown = sorted(str(key) for key in set(data) - MANIFEST_KEYS)
    if unknown:
        allowed = ", ".join(sorted(MANIFEST_KEYS))
        raise ArtifactError(f"{where}: unknown key {unknown[0]!r} (allowed: {allowed})")
    declared = revision.from_manifest(data, where)
    if "schema_version" not in data and "min_schema" not in data:
        return None, declared
    values: dict[str, int] = {}
    for key in ("schema_version", "min_schema"):
        value = data.get(key, data.get("schema_version") if key == "min_schema" else None)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**9:
            raise ArtifactError(f"{where}: {key} must be a whole number >= 0, got {value!r}")
        values[key] = value
    if values["min_schema"] > values["schema_version"]:
        raise ArtifactError(f"{where}: min_schema ({values['min_schema']}) is above schema_version")
    return Manifest(values["schema_version"], values["min_schema"]), declared


@dataclass(frozen=True)
class Artifact:
    """A checked `.tar.gz` ready to send: `path` (a private copy, see PreparedArtifact) is read by the
    uploader, `digest` is its sha256, `source` what the user named."""

    path: str
    digest: str
    size: int
    source: str
    manifest: Manifest | None = None
    declared: Revision = Revision()  # the version and commit its release.yml names
    revision: Revision = Revision()  # what the release is recorded as (flags, release.yml, git, CI)
    signature: Signature | None = None  # its signature, when it came with one the inventory trusts
    url: str = ""  # hosts fetch it from here themselves (a pull deploy); "" when it is uploaded

    @property
    def signer(self) -> Signer | None:
        """Who signed it, as checked here (None when unsigned, or when only the hosts can check it)."""
        if self.signature is None or not self.signature.signer.principal:
            return None
        return self.signature.signer


def _check_member(member: tarfile.TarInfo, source: str) -> None:
    name = member.name
    where = f"artifact {source}: member {name!r}"
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise ArtifactError(f"{where}: absolute paths and '..' are not allowed")
    if member.isdev() or member.isfifo():
        raise ArtifactError(f"{where}: device files and FIFOs are not allowed")
    if len(parts) == 1 and parts[0] in RESERVED_NAMES:
        raise ArtifactError(f"{where}: '{parts[0]}' is written by the deployer and may not be shipped")
    if member.issym() or member.islnk():
        target = member.linkname
        base = posixpath.dirname("/".join(parts)) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join("/release", base, target))
        if target.startswith("/") or not (resolved == "/release" or resolved.startswith("/release/")):
            raise ArtifactError(f"{where}: link to {target!r} points outside the release folder")


def check_tarball(path: str, source: str) -> tuple[Manifest | None, Revision]:
    """Refuse unreadable archives and members that could escape or subvert the release folder.

    Returns what the release's `release.yml` (at the top) declares, if it ships one.
    """
    manifest_text: bytes | None = None
    try:
        with tarfile.open(path, "r:gz") as archive:
            count = 0
            for member in archive:
                _check_member(member, source)
                count += 1
                if posixpath.normpath(member.name) == MANIFEST_NAME and member.isfile() and member.size < 65536:
                    extracted = archive.extractfile(member)
                    manifest_text = extracted.read() if extracted is not None else None
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ArtifactError(f"artifact {source}: not a readable .tar.gz ({exc})") from None
    if count == 0:
        raise ArtifactError(f"artifact {source}: the archive is empty")
    return parse_manifest(manifest_text, source) if manifest_text is not None else (None, Revision())


def _reset_owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def pack_directory(directory: str, destination: str) -> None:
    """Pack the folder's contents (not the folder itself) into a reproducible .tar.gz."""
    with (
        open(destination, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for root, dirs, files in os.walk(directory):
            dirs.sort()
            for name in sorted(dirs) + sorted(files):
                full = os.path.join(root, name)
                arcname = os.path.relpath(full, directory)
                archive.add(full, arcname=arcname, recursive=False, filter=_reset_owner)


def sha256_file(path: str) -> tuple[str, int]:
    return copy_and_hash(path, None)


def copy_and_hash(source: str, destination: str | None) -> tuple[str, int]:
    """The sha256 and size of `source`, read a chunk at a time; copied as read to `destination` (a
    new file) when one is given."""
    digest = hashlib.sha256()
    size = 0
    with open(source, "rb") as reading, open(destination, "xb") if destination else contextlib.nullcontext() as writing:
        while chunk := reading.read(1 << 20):
            digest.update(chunk)
            if writing is not None:
                writing.write(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class PreparedArtifact:
    """Context manager yielding an `Artifact` whose `path` is a private copy of the source (a folder
    packed, a file copied), removed on exit."""

    def __init__(
        self,
        source: str,
        flags: Revision | None = None,
        signatures: Sequence[Signatures] = (),
        signature: str | None = None,
        pull: str = "",
        sha256: str = "",
    ) -> None:
        self.source = source
        self.flags = flags or Revision()  # --version / --commit: first among the revision's sources
        self.signatures = signatures  # the inventory's `signatures`: checked here, before any host is contacted
        self.signature = signature  # --signature (default: the artifact's .sig beside it)
        self.pull = pull  # --pull URL: hosts fetch the (local, checked) artifact's bytes from there
        self.sha256 = sha256  # --sha256: the digest of an artifact given only as a URL
        self._scratch: Scratch | None = None

    def __enter__(self) -> Artifact:
        source = self.source
        if is_url(source):
            return self._remote(source)
        if self.sha256:
            raise InputError("--sha256 is for an artifact given as a URL; a local artifact's digest is computed here")
        if self.pull:
            check_url(self.pull, "--pull")
            if os.path.isdir(source):
                raise InputError("--pull: the artifact must be the .tar.gz file the URL serves, not a folder")
        folder = os.path.isdir(source)
        if not folder and not os.path.isfile(source):
            raise ArtifactError(f"artifact {source}: no such file or folder")
        if not folder and not source.endswith((".tar.gz", ".tgz")):
            raise ArtifactError(f"artifact {source}: expected a .tar.gz (or .tgz) file or a folder")
        # What is checked, digested, signature-checked and sent is one private copy, read from the
        # source once: a build writing the file again meanwhile changes nothing of this deploy (and
        # cannot pull the mapped pages from under the upload: SIGBUS).
        self._scratch = Scratch("artifact")
        path = os.path.join(self._scratch.__enter__(), "release.tar.gz")
        try:
            if folder:
                pack_directory(source, path)
                digest, size = sha256_file(path)
            else:
                digest, size = copy_and_hash(source, path)
        except OSError as exc:
            self.__exit__()
            doing = "pack the folder" if folder else "copy it to a private place"
            raise ArtifactError(f"artifact {source}: cannot {doing} ({exc})") from None
        try:
            manifest, declared = check_tarball(path, source)
            signature = check_artifact(self.signatures, path, source, self.signature)
        except BaseException:
            self.__exit__()
            raise
        found = revision.collect(self.flags, declared, source)
        return Artifact(path, digest, size, source, manifest, declared, found, signature, self.pull)

    def _remote(self, url: str) -> Artifact:
        """An artifact only hosts will read (`--artifact URL --sha256 HEX`): nothing to check here
        but its name and digest; each host checks the bytes it fetched (digest, signature)."""
        check_url(url, "--artifact")
        if self.pull:
            raise InputError("--pull names where hosts fetch a local artifact from; the artifact is a URL already")
        if not SHA256_RE.fullmatch(self.sha256 or ""):
            raise InputError(
                f"--artifact {shown_url(url)} needs --sha256 (64 hex digits) so hosts can check what they fetch; "
                "or give the file here: --artifact FILE --pull URL"
            )
        signature = check_remote_signature(self.signatures, self.signature)
        found = revision.collect(self.flags, Revision(), shown_url(url))
        return Artifact("", self.sha256, 0, shown_url(url), None, Revision(), found, signature, url)

    def __exit__(self, *exc_info: object) -> None:
        if self._scratch is not None:
            self._scratch.__exit__()
            self._scratch = None
