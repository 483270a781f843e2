"""Release signatures (`deployer.signing`) against the real `ssh-keygen -Y`: each way a signature
can fail to be acceptable is refused with its own reason, and a good one names its signer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deployer import host_signers, signing
from deployer.errors import InputError
from deployer.inventory.model import MAX_ALLOWED_SIGNERS


def keypair(folder: Path, name: str) -> tuple[str, str]:
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    public = " ".join((folder / f"{name}.pub").read_text().split()[:2])
    return str(key), public


def fingerprint(public_file: str) -> str:
    return subprocess.run(
        ["ssh-keygen", "-lf", public_file], capture_output=True, text=True, check=True
    ).stdout.split()[1]


@pytest.fixture
def release(tmp_path: Path) -> dict[str, str]:
    ci_key, ci_public = keypair(tmp_path, "ci")
    other_key, other_public = keypair(tmp_path, "laptop")
    artifact = tmp_path / "app.tar.gz"
    artifact.write_bytes(b"\x1f\x8b release bytes" * 100)
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f'ci@example.org namespaces="{signing.NAMESPACE}" {ci_public}\n')
    return {
        "artifact": str(artifact),
        "ci": ci_key,
        "ci_public": ci_public,
        "other": other_key,
        "other_public": other_public,
        "allowed": str(allowed),
        "folder": str(tmp_path),
    }


def test_a_good_signature_names_its_signer(release):
    signature = signing.sign(release["artifact"], release["ci"])
    assert signature == release["artifact"] + ".sig" and "BEGIN SSH SIGNATURE" in Path(signature).read_text()
    assert "PRIVATE KEY" not in Path(signature).read_text()
    signer = signing.verify(release["artifact"], signature, release["allowed"])
    assert signer == signing.Signer("ci@example.org", fingerprint(release["ci"] + ".pub"), "ED25519")


def refused(release, signature: str | None = None, **options) -> str:
    with pytest.raises(signing.SignatureRefused) as error:
        signing.verify(release["artifact"], signature or release["artifact"] + ".sig", release["allowed"], **options)
    return str(error.value)


def test_unsigned(release):
    assert "is not signed: no " in refused(release)


def test_signed_for_another_namespace(release):
    signing.sign(release["artifact"], release["ci"], namespace="git")
    assert "made for another purpose" in refused(release)


def test_untrusted_key(release):
    signing.sign(release["artifact"], release["other"])
    assert f"the key that signed it ({fingerprint(release['other'] + '.pub')}) is not in" in refused(release)


def test_revoked_key(release):
    signature = signing.sign(release["artifact"], release["ci"])
    revoked = Path(release["folder"]) / "revoked_keys"
    revoked.write_text(release["ci_public"] + "\n")
    assert "ci@example.org's key SHA256:" in refused(release, signature, revoked=str(revoked))
    assert "is revoked" in refused(release, signature, revoked=str(revoked))
    revoked.write_text(release["other_public"] + "\n")  # someone else's key revoked: still good
    assert signing.verify(release["artifact"], signature, release["allowed"], revoked=str(revoked)).principal


def test_key_outside_its_validity_window(release):
    signing.sign(release["artifact"], release["ci"])
    Path(release["allowed"]).write_text(f'ci@example.org valid-before="20200101" {release["ci_public"]}\n')
    assert "outside its validity window" in refused(release)


def test_key_not_allowed_this_namespace(release):
    signing.sign(release["artifact"], release["ci"])
    Path(release["allowed"]).write_text(f'ci@example.org namespaces="git" {release["ci_public"]}\n')
    assert "may not sign 'deployer-release'" in refused(release)


def test_artifact_changed_after_signing(release):
    signing.sign(release["artifact"], release["ci"])
    with open(release["artifact"], "ab") as handle:
        handle.write(b"one more byte")
    assert "is not a signature of these bytes" in refused(release)


def test_signature_of_another_artifact(release):
    other = Path(release["folder"]) / "other.tar.gz"
    other.write_bytes(b"other bytes")
    signature = signing.sign(str(other), release["ci"])
    assert "is not a signature of these bytes" in refused(release, signature)


def test_signing_with_a_missing_key_is_a_clear_error(release):
    with pytest.raises(InputError, match="ssh-keygen could not sign"):
        signing.sign(release["artifact"], release["folder"] + "/no-such-key")
    assert not Path(release["artifact"] + ".sig").exists()


def test_a_recorded_signer_stays_trusted_until_removed_revoked_or_denied_the_namespace(release):
    from deployer.inventory.model import Signatures

    settings = Signatures(release["allowed"])
    ci = fingerprint(release["ci"] + ".pub")
    assert signing.still_trusted(settings, "ci@example.org", ci) == ""
    assert "no longer allowed for bob@example.org" in signing.still_trusted(settings, "bob@example.org", ci)
    laptop = fingerprint(release["other"] + ".pub")
    assert "is no longer in" in signing.still_trusted(settings, "laptop@example.org", laptop)
    plain = Path(release["folder"]) / "revoked_keys"
    plain.write_text(release["ci_public"] + "\n")
    assert "is revoked" in signing.still_trusted(
        Signatures(release["allowed"], revoked=str(plain)), "ci@example.org", ci
    )
    krl = Path(release["folder"]) / "revoked.krl"
    subprocess.run(["ssh-keygen", "-q", "-k", "-f", str(krl), release["other"] + ".pub"], check=True)
    assert signing.still_trusted(Signatures(release["allowed"], revoked=str(krl)), "ci@example.org", ci) == ""
    subprocess.run(["ssh-keygen", "-q", "-k", "-f", str(krl), release["ci"] + ".pub"], check=True)
    assert "is revoked" in signing.still_trusted(Signatures(release["allowed"], revoked=str(krl)), "ci@example.org", ci)
    other_namespace = Signatures(release["allowed"], namespace="other-app")
    assert "may no longer sign 'other-app'" in signing.still_trusted(other_namespace, "ci@example.org", ci)
    # a closed validity window does not make an earlier, valid signature untrusted
    Path(release["allowed"]).write_text(f'ci@example.org valid-before="20200101" {release["ci_public"]}\n')
    assert signing.still_trusted(settings, "ci@example.org", ci) == ""


def test_what_hosts_keep_is_byte_exact_and_bounded(release):
    from deployer.inventory.model import Signatures

    copy = host_signers.host_copy(Signatures(release["allowed"], require=True))
    assert copy.allowed_signers == Path(release["allowed"]).read_bytes()
    assert copy.policy == b"require=yes namespace=deployer-release\n"
    assert copy.digests.split()[1] == "-"
    Path(release["allowed"]).write_text("x" * (MAX_ALLOWED_SIGNERS + 1))
    with pytest.raises(InputError, match="hosts take at most"):
        host_signers.host_copy(Signatures(release["allowed"]))


def test_a_line_ssh_keygen_cannot_parse_is_skipped_in_the_explanations(release):
    from deployer.inventory.model import Signatures

    signing.sign(release["artifact"], release["ci"])
    broken = f'ops@example.org namespaces="unclosed {release["other_public"]}\n'
    Path(release["allowed"]).write_text(broken + f'ci@example.org valid-before="20200101" {release["ci_public"]}\n')
    assert "outside its validity window" in refused(release)  # the reason, not a parser's exception
    ci = fingerprint(release["ci"] + ".pub")
    assert signing.still_trusted(Signatures(release["allowed"]), "ci@example.org", ci) == ""
    laptop = fingerprint(release["other"] + ".pub")
    assert "is no longer in" in signing.still_trusted(Signatures(release["allowed"]), "ops@example.org", laptop)


def test_a_large_artifact_is_signed_and_checked_without_holding_it_in_memory(release):
    """ssh-keygen reads the artifact itself: signing and checking 256 MB costs this process a few MB
    (it held the whole file before: a multi-GB artifact needed GBs of controller memory)."""
    big = Path(release["folder"]) / "big.tar.gz"
    with open(big, "wb") as handle:
        handle.truncate(256 * 1024 * 1024)  # sparse: read back as zeros, no disk
    program = (
        "import resource, sys\n"
        "from deployer import signing\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "signature = signing.sign(sys.argv[1], sys.argv[2])\n"
        "signer = signing.verify(sys.argv[1], signature, sys.argv[3])\n"
        "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
        "print(signer.principal, grown)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, str(big), release["ci"], release["allowed"]],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    principal, grown_kb = done.stdout.split()
    assert principal == "ci@example.org"
    assert int(grown_kb) < 32 * 1024, f"the process grew by {int(grown_kb) // 1024} MB"
