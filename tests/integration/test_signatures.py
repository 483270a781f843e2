"""Signed releases, checked by the controller before any host is contacted (issue 17's first part):
a signed artifact deploys and its signer is reported; every kind of bad or missing signature is
refused with its reason, with no connection made to any host. Hosts are read over OpenSSH."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_inv

pytestmark = pytest.mark.fleet


def keypair(folder: Path, name: str) -> tuple[str, str]:
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return str(key), " ".join((folder / f"{name}.pub").read_text().split()[:2])


def contacts(local_fleet) -> int:
    """Connections accepted by every host's sshd so far (its own log)."""
    return sum(Path(h.log).read_text().count("Accepted publickey") for h in local_fleet.hosts())


@pytest.fixture
def signed(tmp_path, make_inventory, artifacts):
    ci_key, ci_public = keypair(tmp_path, "ci")
    other_key, _ = keypair(tmp_path, "laptop")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"ci@example.org {ci_public}\n")
    revoked = tmp_path / "revoked_keys"
    revoked.write_text("")
    inventory = make_inventory(extra=f"signatures: {{allowed_signers: {allowed}, require: true, revoked: {revoked}}}\n")
    artifact = tmp_path / "app-v1.tar.gz"
    shutil.copy(artifacts["v1"], artifact)
    return {
        "inventory": inventory,
        "artifact": str(artifact),
        "ci": ci_key,
        "ci_public": ci_public,
        "other": other_key,
        "allowed": allowed,
        "revoked": revoked,
        "folder": tmp_path,
    }


def test_a_signed_artifact_deploys_and_names_its_signer(signed, views, deploy_to):
    made = run_inv("sign", signed["artifact"], "--key", signed["ci"])
    assert made.returncode == 0 and made.stdout.strip() == signed["artifact"] + ".sig"
    assert "PRIVATE KEY" not in Path(signed["artifact"] + ".sig").read_text()
    done = run_inv("deploy", "--inventory", signed["inventory"], "--artifact", signed["artifact"], "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    fingerprint = subprocess.run(
        ["ssh-keygen", "-lf", signed["ci"] + ".pub"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert report["signature"] == {"principal": "ci@example.org", "fingerprint": fingerprint, "key_type": "ED25519"}
    assert {view.version(deploy_to) for view in views.values()} == {"v1"}


def _sign(signed, key: str = "ci", namespace: str = "deployer-release", artifact: str | None = None) -> None:
    target = artifact or signed["artifact"]
    done = run_inv("sign", target, "--key", signed[key], "--namespace", namespace)
    assert done.returncode == 0, done.stderr
    if artifact:
        shutil.move(target + ".sig", signed["artifact"] + ".sig")  # another artifact's signature, beside this one


def unsigned(signed):
    return "is not signed"


def wrong_namespace(signed):
    _sign(signed, namespace="git")
    return "made for another purpose"


def untrusted_key(signed):
    _sign(signed, key="other")
    return "is not in"


def revoked_key(signed):
    _sign(signed)
    signed["revoked"].write_text(signed["ci_public"] + "\n")
    return "is revoked"


def expired_window(signed):
    _sign(signed)
    signed["allowed"].write_text(f'ci@example.org valid-before="20200101" {signed["ci_public"]}\n')
    return "outside its validity window"


def tampered_after_signing(signed):
    _sign(signed)
    with open(signed["artifact"], "ab") as handle:
        handle.write(b"\0" * 512)  # still a readable .tar.gz, different bytes
    return "is not a signature of these bytes"


def signature_of_another_artifact(signed):
    other = signed["folder"] / "other.tar.gz"
    shutil.copy(signed["artifact"], other)
    with open(other, "ab") as handle:
        handle.write(b"\0" * 1024)
    _sign(signed, artifact=str(other))
    return "is not a signature of these bytes"


@pytest.mark.parametrize(
    "case",
    [
        unsigned,
        wrong_namespace,
        untrusted_key,
        revoked_key,
        expired_window,
        tampered_after_signing,
        signature_of_another_artifact,
    ],
)
def test_bad_signatures_are_refused_before_any_host_is_contacted(case, signed, local_fleet, views, deploy_to):
    reason = case(signed)
    before = contacts(local_fleet)
    refused = run_inv("deploy", "--inventory", signed["inventory"], "--artifact", signed["artifact"])
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert reason in refused.stderr and "Traceback" not in refused.stderr
    assert contacts(local_fleet) == before  # refused before any connection
    assert all(view.current_link(deploy_to) is None for view in views.values())
