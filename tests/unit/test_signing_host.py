"""The host's own check of a release's signature (remote/stage.sh with the real sh and ssh-keygen,
no SSH): it keeps its own copy of who may sign, verifies with it before the release leaves staging,
and refuses whatever the controller says when that copy does not let the release through."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from deployer import host_signers, signing
from deployer.inventory.model import Signatures
from deployer.protocol import parse_output
from deployer.release import PreparedArtifact
from deployer.scripts import EXIT_SIGNATURE, command_line, octal_escaped
from deployer.state import parse_state
from tests.unit.test_signing import fingerprint, keypair

pytestmark = pytest.mark.usefixtures("remote_shell")


def run(command: str, stdin: bytes):
    done = subprocess.run(["sh", "-c", command], input=stdin, capture_output=True, timeout=60)
    return done.returncode, parse_output(done.stdout.decode(), done.stderr.decode())


@pytest.fixture
def signed(tmp_path: Path):
    tree = tmp_path / "app"
    tree.mkdir()
    (tree / "VERSION").write_text("v1\n")
    artifact = str(tmp_path / "app.tar.gz")
    from deployer.release import pack_directory

    pack_directory(str(tree), artifact)
    ci_key, ci_public = keypair(tmp_path, "ci")
    other_key, other_public = keypair(tmp_path, "laptop")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f'ci@example.org namespaces="{signing.NAMESPACE}" {ci_public}\n')
    settings = Signatures(allowed_signers=str(allowed), require=True)
    signature = signing.check_artifact([settings], artifact, artifact, signing.sign(artifact, ci_key))
    assert signature is not None
    with PreparedArtifact(artifact) as prepared:
        data = Path(prepared.path).read_bytes()
        digest = prepared.digest
    return {
        "artifact": artifact,
        "data": data,
        "digest": digest,
        "settings": settings,
        "signature": signature,
        "ci": ci_key,
        "other": other_key,
        "other_public": other_public,
        "deploy_to": str(tmp_path / "srv"),
        "folder": tmp_path,
    }


def stage(signed, release: str, data: bytes | None = None, place: bool = True, **options: str):
    copy = host_signers.host_copy(options.pop("settings", None) or signed["settings"])
    given: dict[str, str] = {"signers": copy.digests}
    if place:
        given.update(
            signers_place=octal_escaped(copy.allowed_signers),
            revoked_place=octal_escaped(copy.revoked),
            policy_place=octal_escaped(copy.policy),
        )
    given.update(options)
    given = {key: value for key, value in given.items() if value is not None}
    command = command_line("stage", signed["deploy_to"], release=release, digest=signed["digest"], **given)
    return run(command, data if data is not None else signed["data"])


def good(signed) -> dict[str, str]:
    return {"signature": signed["signature"].text, "principal": "ci@example.org"}


def releases(signed) -> list[str]:
    folder = Path(signed["deploy_to"], "releases")
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def test_the_first_signed_stage_places_the_hosts_copy_and_records_the_signer(signed):
    code, output = stage(signed, "20260101T000000Z-aaaaaaaa", **good(signed))
    assert code == 0, output.error_message()
    kept = Path(signed["deploy_to"], ".deployer", "signers")
    assert (kept / "allowed_signers").read_bytes() == Path(signed["settings"].allowed_signers).read_bytes()
    assert (kept / "policy").read_text() == "require=yes namespace=deployer-release\n"
    assert not (kept / "revoked").exists()
    ci_fingerprint = fingerprint(signed["ci"] + ".pub")
    assert output.first("signed") == ["ci@example.org", ci_fingerprint]
    assert output.has("signers_placed")
    sig = Path(signed["deploy_to"], ".deployer", "signatures", "20260101T000000Z-aaaaaaaa.sig")
    assert sig.read_text().strip() == signed["signature"].text
    meta = Path(signed["deploy_to"], ".deployer", "meta", "20260101T000000Z-aaaaaaaa").read_text().split()
    assert meta[0] == "ok" and meta[-2:] == ["ci@example.org", ci_fingerprint]
    # gather reads the same back: the signer with the release, the host's copy by digest
    code, gathered = run(command_line("gather", signed["deploy_to"]), b"")
    state = parse_state("web1", gathered, signed["deploy_to"])
    info = state.releases["20260101T000000Z-aaaaaaaa"]
    assert (info.signer, info.signer_fingerprint) == ("ci@example.org", ci_fingerprint)
    assert state.signers == host_signers.host_copy(signed["settings"]).digests


def test_a_host_that_requires_signatures_refuses_an_unsigned_release_whatever_the_controller_says(signed):
    assert stage(signed, "20260101T000000Z-aaaaaaaa", **good(signed))[0] == 0
    # a tricked controller: it sends no signature and no expected copy
    code, output = stage(signed, "20260101T000001Z-bbbbbbbb", place=False, signers=None)
    assert code == EXIT_SIGNATURE
    assert "takes only signed releases" in output.error_message()
    assert releases(signed) == ["20260101T000000Z-aaaaaaaa"]


def test_a_signature_of_other_bytes_is_refused_by_the_host(signed):
    other = signed["folder"] / "other.tar.gz"
    other.write_bytes(b"other bytes")
    text = Path(signing.sign(str(other), signed["ci"])).read_text()
    code, output = stage(signed, "20260101T000000Z-aaaaaaaa", signature=text, principal="ci@example.org")
    assert code == EXIT_SIGNATURE
    assert "signature refused by this host: ssh-keygen here refused it" in output.error_message()
    assert releases(signed) == []
    assert not Path(signed["deploy_to"], ".deployer", "staging", "20260101T000000Z-aaaaaaaa").exists()


def test_an_untrusted_key_is_refused_by_the_host_even_when_the_controller_names_a_trusted_principal(signed):
    text = Path(signing.sign(signed["artifact"], signed["other"])).read_text()
    code, output = stage(signed, "20260101T000000Z-aaaaaaaa", signature=text, principal="ci@example.org")
    assert code == EXIT_SIGNATURE and "refused" in output.error_message()
    assert releases(signed) == []


def test_a_copy_changed_behind_the_tools_back_is_refused(signed):
    assert stage(signed, "20260101T000000Z-aaaaaaaa", **good(signed))[0] == 0
    kept = Path(signed["deploy_to"], ".deployer", "signers", "allowed_signers")
    kept.write_text(kept.read_text() + f"mallory@example.org {signed['other_public']}\n")
    code, output = stage(signed, "20260101T000001Z-bbbbbbbb", **good(signed))
    assert code == EXIT_SIGNATURE
    assert "are not the inventory's: changed on this host or in the inventory" in output.error_message()
    assert releases(signed) == ["20260101T000000Z-aaaaaaaa"]


def test_a_tricked_controller_cannot_replace_the_hosts_copy(signed):
    assert stage(signed, "20260101T000000Z-aaaaaaaa", **good(signed))[0] == 0
    mallory_allowed = signed["folder"] / "mallory_signers"
    mallory_allowed.write_text(f"mallory@example.org {signed['other_public']}\n")
    mallory = Signatures(allowed_signers=str(mallory_allowed), require=False)
    text = Path(signing.sign(signed["artifact"], signed["other"])).read_text()
    code, output = stage(
        signed, "20260101T000001Z-bbbbbbbb", settings=mallory, signers=None, signature=text, principal=""
    )
    assert code == EXIT_SIGNATURE, output.error_message()
    kept = Path(signed["deploy_to"], ".deployer", "signers", "allowed_signers")
    assert "mallory" not in kept.read_text()
    assert releases(signed) == ["20260101T000000Z-aaaaaaaa"]


def test_a_revoked_key_is_refused_by_the_host_and_a_binary_krl_arrives_byte_for_byte(signed):
    public = signed["ci"] + ".pub"
    krl = signed["folder"] / "revoked.krl"
    subprocess.run(["ssh-keygen", "-q", "-k", "-f", str(krl), public], check=True, capture_output=True)
    assert b"\0" in krl.read_bytes()
    settings = Signatures(signed["settings"].allowed_signers, require=True, revoked=str(krl))
    code, output = stage(signed, "20260101T000000Z-aaaaaaaa", settings=settings, **good(signed))
    assert code == EXIT_SIGNATURE and "refused" in output.error_message()
    kept = Path(signed["deploy_to"], ".deployer", "signers", "revoked").read_bytes()
    assert hashlib.sha256(kept).hexdigest() == hashlib.sha256(krl.read_bytes()).hexdigest()
    assert releases(signed) == []


def test_without_a_hosts_copy_a_signature_cannot_be_checked_and_is_refused(signed):
    code, output = stage(signed, "20260101T000000Z-aaaaaaaa", place=False, signers=None, **good(signed))
    assert code == EXIT_SIGNATURE and "no allowed signers to check it with" in output.error_message()


def test_a_host_without_ssh_keygen_is_named_when_its_releases_are_signed(tmp_path):
    tools = tmp_path / "bin"
    tools.mkdir()
    lib = (Path(__file__).resolve().parents[2] / "deployer" / "remote" / "lib.sh").read_text()
    required = lib.split("REQUIRED_TOOLS='", 1)[1].split("'", 1)[0] + " sha256sum"
    for tool in required.split(" "):
        os.symlink(shutil.which(tool), tools / tool)
    env = {"PATH": str(tools)}
    deploy_to = str(tmp_path / "srv")
    for signing_on, expected in (("1", [["ssh-keygen (signed releases)"]]), ("", [])):
        done = subprocess.run(
            ["/bin/sh", "-c", command_line("gather", deploy_to, signing=signing_on)], capture_output=True, env=env
        )
        output = parse_output(done.stdout.decode(), done.stderr.decode())
        assert output.all("missing") == expected
    done = subprocess.run(["sh", "-c", command_line("gather", deploy_to, signing="1")], capture_output=True)
    assert parse_output(done.stdout.decode(), done.stderr.decode()).all("missing") == []
