"""stage: upload (or reuse the cached tarball), unpack, link shared paths, validate; one session per host."""

from __future__ import annotations

import logging
import mmap
import os
import threading
from collections.abc import Mapping
from datetime import datetime, timezone

from deployer import host_signers
from deployer import plan as planning
from deployer.connection import HostConnection
from deployer.errors import HostError, StepFailed
from deployer.inventory import Inventory
from deployer.lock import utc_now
from deployer.phases.run import Run, env_block, whole_seconds
from deployer.plan import HostPlan
from deployer.release import Artifact
from deployer.revision import revision_file
from deployer.scripts import (
    EXIT_FETCH,
    EXIT_SIGNATURE,
    EXIT_VALIDATE,
    ScriptResult,
    run_script,
)

log = logging.getLogger(__name__)


def stage(
    run: Run,
    artifact: Artifact,
    release: str,
    hosts: list[HostPlan],
    copies: Mapping[str, host_signers.HostCopy],
    staged_at: datetime | None = None,
) -> dict[str, HostError]:
    """Upload (or reuse the cached tarball), unpack, link shared paths, validate: one session per host.

    `copies`: what each host's own copy of who may sign must be (`host_signers.host_copies`, as planned);
    `staged_at`: the time the release is recorded at (`plan.fleet_clock`; default: now).
    """
    inventory = run.inventory
    sources = {host_plan.host: host_plan.source for host_plan in hosts}
    placing = {host_plan.host for host_plan in hosts if host_plan.place_signers}
    meta = release_meta(artifact, staged_at)
    mapped = MappedArtifact(artifact.path) if artifact.path else None
    environment = run.environment
    fetching = env_block(inventory, artifact.url) if artifact.url else b""
    # a cap on hosts fetching at once (an origin is not stampeded); validation is not capped
    gate = threading.BoundedSemaphore(inventory.fetch_parallel) if artifact.url and inventory.fetch_parallel else None
    failures: dict[str, HostError] = {}

    def work(connection: HostConnection) -> float:
        name = connection.host.name
        source = sources[name]
        upload: list[bytes | memoryview]
        if source == planning.FETCH:
            upload = [fetching]
        elif source == planning.UPLOAD and mapped is not None:
            upload = [environment, mapped.view]
        else:
            upload = [environment]
        signed = signature_options(artifact, copies.get(name), place=name in placing)
        gated = gate if source == planning.FETCH else None
        result = run_script(
            connection,
            "stage",
            inventory.deploy_to_of(connection.host),
            session_timeout=inventory.timeouts.stage,
            upload=upload,
            gate=gated,
            release=release,
            digest=artifact.digest,
            source=source,
            validate=inventory.validate,
            validate_timeout=whole_seconds(inventory.timeouts.validate),
            meta=meta,
            revision=revision_file(artifact.revision),
            shared="\n".join(inventory.shared),
            env="1" if upload[0] else "",
            fetch_timeout=whole_seconds(inventory.timeouts.stage) if source == planning.FETCH else "",
            fetch_gate="1" if gated is not None else "",
            now=utc_now(),
            fence=run.lock.token,
            **signed,
        )
        if result.exit_status != 0:
            raise staging_failed(name, result, inventory)
        if result.output.first("staged") != [release, artifact.digest]:
            raise StepFailed(connection.host.name, "staging", 0, "the host did not confirm the staged release")
        return result.seconds

    try:
        targets = [inventory.host(name) for name in sources]
        for host, outcome in run.fleet.map(work, targets):
            if isinstance(outcome, HostError):
                failures[host.name] = outcome
                run.progress.host(host.name, f"FAILED: {outcome.reason}")
            else:
                run.progress.host(host.name, f"staged and validated ({outcome:.2f}s)")
    except BaseException:
        run.fleet.settle()  # Ctrl-C: stop the uploads and wait for them before the map goes away
        raise
    finally:
        if mapped is not None:
            mapped.close()
    return failures


def release_meta(artifact: Artifact, staged_at: datetime | None = None) -> str:
    """The release's `meta` record: when it was staged (by this controller's clock, or the time the
    planner chose when the fleet holds a later one: it orders releases, never mtimes), the
    manifest's schema bounds, the revision's version and commit."""
    manifest = artifact.manifest
    return " ".join(
        [
            (staged_at or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            str(manifest.schema_version) if manifest else "-",
            str(manifest.min_schema) if manifest else "-",
            artifact.revision.version or "-",
            artifact.revision.commit or "-",
        ]
    )


def signature_options(artifact: Artifact, copy: host_signers.HostCopy | None, place: bool) -> dict[str, str]:
    """What a host needs to check the artifact's signature on its own: the signature and who signed
    it, the digests its copy of who may sign must have, and (`place`) that copy itself."""
    signed: dict[str, str] = {}
    if artifact.signature is not None:
        signed.update(signature=artifact.signature.text, principal=artifact.signature.signer.principal)
    if copy is not None:
        signed["signers"] = copy.digests
        if place:
            signed.update(copy.place_options())
    return signed


def staging_failed(host: str, result: ScriptResult, inventory: Inventory) -> StepFailed:
    """A failed staging session in words: which step (validation, signature, fetching, staging) and why."""
    output = result.output
    steps = {EXIT_VALIDATE: "validation", EXIT_SIGNATURE: "signature", EXIT_FETCH: "fetching"}
    message = output.error_message()
    failed = output.first("validate_failed")
    if result.exit_status == EXIT_VALIDATE and failed is not None:
        code, tail = failed[0], failed[1].strip()
        message = f"`{inventory.validate}` exited {code}" + (f": {tail}" if tail else "")
        if code == "124":
            message += f" (stopped after timeouts.validate = {inventory.timeouts.validate:g}s)"
    return StepFailed(host, steps.get(result.exit_status, "staging"), result.exit_status, message, output.tail())


class MappedArtifact:
    """The artifact file mapped into memory once and shared, read-only, by every upload."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        size = os.fstat(self._file.fileno()).st_size
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self.view = memoryview(self._map) if self._map is not None else memoryview(b"")

    def close(self) -> None:
        """Unmap and close. A slice of the map still referenced (from the traceback of an upload
        stopped by Ctrl-C) keeps the map alive until it goes: the map is then freed with it."""
        try:
            self.view.release()
            if self._map is not None:
                self._map.close()
        except BufferError:
            log.debug("artifact map still referenced; it is freed when the last reference goes")
        self._file.close()
