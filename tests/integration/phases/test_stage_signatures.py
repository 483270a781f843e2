"""Signed releases on the local fleet. The controller refuses every kind of bad or missing
signature with its reason before any host is contacted; each host checks the signature itself,
with its own copy of who may sign, before the release leaves staging (a tricked controller, a copy
changed behind the tool's back); the signer is recorded on the hosts and shown; a rollback to a
release whose key was revoked is refused unless forced. Hosts are read over OpenSSH."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from deployer import host_signers, operations, signing
from deployer.inventory import load_inventory
from deployer.report import Progress
from tests.conftest import run_inv

QUIET = Progress(quiet=True)

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


def fingerprint_of(key: str) -> str:
    return subprocess.run(
        ["ssh-keygen", "-lf", key + ".pub"], capture_output=True, text=True, check=True
    ).stdout.split()[1]


def signed_copy(signed, version: str, artifacts, key: str = "ci") -> str:
    """A copy of the sample artifact `version`, signed with `key` by `deployer sign`."""
    path = str(signed["folder"] / f"app-{version}-{key}.tar.gz")
    shutil.copy(artifacts[version], path)
    done = run_inv("sign", path, "--key", signed[key])
    assert done.returncode == 0, done.stderr
    return path


def deploy_json(inventory: str, artifact: str, *extra: str) -> tuple[int, dict]:
    done = run_inv("deploy", "--inventory", inventory, "--artifact", artifact, "--json", *extra)
    return done.returncode, json.loads(done.stdout)


def test_every_host_checks_the_signature_itself_and_records_the_signer(
    signed, local_fleet, views, deploy_to, artifacts
):
    v1 = signed_copy(signed, "v1", artifacts)
    before = local_fleet.ssh_counts()
    code, report = deploy_json(signed["inventory"], v1)
    assert code == 0, report
    after = local_fleet.ssh_counts()
    release = report["target"]
    ci = fingerprint_of(signed["ci"])
    allowed = hashlib.sha256(signed["allowed"].read_bytes()).hexdigest()
    for name, view in views.items():
        # the budget of an unsigned deploy: verification runs inside the staging session
        assert (after[name][0] - before[name][0], after[name][1] - before[name][1]) == (1, 3)
        assert view.version(deploy_to) == "v1"
        kept = view.sh("cat %s", f"{deploy_to}/.deployer/signers/allowed_signers") + "\n"
        assert hashlib.sha256(kept.encode()).hexdigest() == allowed
        assert view.sh("cat %s", f"{deploy_to}/.deployer/signers/policy") == "require=yes namespace=deployer-release"
        meta = view.sh("cat %s", f"{deploy_to}/.deployer/meta/{release}").split()
        assert meta[-2:] == ["ci@example.org", ci]
        sig = view.sh("cat %s", f"{deploy_to}/.deployer/signatures/{release}.sig")
        assert sig.strip() == Path(v1 + ".sig").read_text().strip()
        # what reached the host is public: no private key anywhere under deploy_to
        assert view.host.run("grep -r -l 'PRIVATE KEY' %s", deploy_to).stdout == ""
    shown = json.loads(run_inv("releases", "--inventory", signed["inventory"], "--json").stdout)
    row = next(row for row in shown["releases"] if row["id"] == release)
    assert row["signed_by"] == {"principal": "ci@example.org", "fingerprint": ci}
    assert sorted(row["signed_on"]) == sorted(views)
    status = json.loads(run_inv("status", "--inventory", signed["inventory"], "--json").stdout)
    assert {host["signed_by"]["principal"] for host in status["hosts"]} == {"ci@example.org"}
    history = json.loads(run_inv("history", "--inventory", signed["inventory"], "--json").stdout)
    assert history["history"][0]["signed_by"]["fingerprint"] == ci
    text = run_inv("releases", "--inventory", signed["inventory"]).stdout
    assert f"{release}" in text and "signed by ci@example.org" in text


def test_a_tricked_controller_cannot_switch_any_host_to_bytes_nobody_signed(
    signed, views, deploy_to, artifacts, monkeypatch
):
    v1 = signed_copy(signed, "v1", artifacts)
    code, report = deploy_json(signed["inventory"], v1)
    assert code == 0, report
    first = report["target"]
    # The controller is fooled: it believes v2 carries v1's good signature (a swapped file after
    # the check, a bug in the check). The hosts get v2's bytes and v1's signature.
    good = signing.check_artifact(load_inventory(signed["inventory"]).signature_settings(), v1, v1, v1 + ".sig")
    monkeypatch.setattr("deployer.release.check_artifact", lambda *args: good)
    inventory = load_inventory(signed["inventory"])
    result = operations.deploy(inventory, artifacts["v2"], progress=QUIET)
    assert not result.ok
    assert all("signature refused by this host" in host.message for host in result.hosts), result.verdict()
    for view in views.values():
        assert view.current_release(deploy_to) == first and view.version(deploy_to) == "v1"
        assert view.releases(deploy_to) == [first]


def test_a_host_whose_copy_was_changed_refuses_on_its_own_when_the_controller_is_fooled(
    signed, views, deploy_to, artifacts, monkeypatch
):
    v1 = signed_copy(signed, "v1", artifacts)
    assert deploy_json(signed["inventory"], v1)[0] == 0
    first = views["web1"].current_release(deploy_to)
    kept = f"{deploy_to}/.deployer/signers/allowed_signers"
    views["web1"].sh("echo 'mallory@example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMallory' >> %s", kept)
    # the controller reads every host's copy as the inventory's (a bug, a lying gather): only web1 can tell
    expected = host_signers.host_copy(load_inventory(signed["inventory"]).signature_settings()[0]).digests
    monkeypatch.setattr("deployer.state._parse_signers", lambda output: expected)
    v2 = signed_copy(signed, "v2", artifacts)
    result = operations.deploy(load_inventory(signed["inventory"]), v2, progress=QUIET)
    assert not result.ok
    web1 = next(host for host in result.hosts if host.host == "web1")
    assert "this host's allowed signers (.deployer/signers) are not the inventory's" in web1.message
    for view in views.values():  # the deploy stopped before any switch: everyone stays on v1
        assert view.current_release(deploy_to) == first and view.version(deploy_to) == "v1"


def test_a_host_whose_copy_was_changed_behind_the_tools_back_is_refused_until_placed_again(
    signed, views, deploy_to, artifacts
):
    v1 = signed_copy(signed, "v1", artifacts)
    assert deploy_json(signed["inventory"], v1)[0] == 0
    first = views["web1"].current_release(deploy_to)
    kept = f"{deploy_to}/.deployer/signers/allowed_signers"
    views["web1"].sh("echo 'mallory@example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMallory' >> %s", kept)
    checked = run_inv("check", "--inventory", signed["inventory"], "--json")
    assert checked.returncode == 1, checked.stdout
    rows = {row["host"]: row for row in json.loads(checked.stdout)["hosts"]}
    assert rows["web1"]["signers"] == "differ" and rows["web2"]["signers"] == "same"
    v2 = signed_copy(signed, "v2", artifacts)
    code, report = deploy_json(signed["inventory"], v2)
    assert code == 3, report
    assert "web1" in report["refusal"]
    web1 = next(host for host in report["hosts"] if host["host"] == "web1")
    assert "are not the inventory's: changed on this host or in the inventory" in web1["message"]
    assert all(view.current_release(deploy_to) == first for view in views.values())
    placed = run_inv("place-signers", "--inventory", signed["inventory"], "--json")
    assert placed.returncode == 0, placed.stdout + placed.stderr
    statuses = {host["host"]: host["status"] for host in json.loads(placed.stdout)["hosts"]}
    assert statuses == {"web1": "ok", **{name: "unchanged" for name in views if name != "web1"}}
    assert "mallory" not in views["web1"].sh("cat %s", kept)
    code, report = deploy_json(signed["inventory"], v2)
    assert code == 0, report
    assert {view.version(deploy_to) for view in views.values()} == {"v2"}


def test_a_rollback_to_a_release_whose_key_was_revoked_is_refused_unless_forced(signed, views, deploy_to, artifacts):
    laptop_public = Path(signed["other"] + ".pub").read_text().split()[:2]
    with open(signed["allowed"], "a") as allowed:
        allowed.write(f"laptop@example.org {' '.join(laptop_public)}\n")
    v1 = signed_copy(signed, "v1", artifacts, key="other")
    code, first = deploy_json(signed["inventory"], v1)
    assert code == 0, first
    v2 = signed_copy(signed, "v2", artifacts)
    code, second = deploy_json(signed["inventory"], v2)
    assert code == 0, second
    signed["revoked"].write_text(" ".join(laptop_public) + "\n")  # the laptop's key is lost
    before = {name: view.sh("ls -a %s", f"{deploy_to}/.deployer") for name, view in views.items()}
    refused = run_inv("rollback", "--inventory", signed["inventory"], "--json")
    assert refused.returncode == 3, refused.stdout
    refusal = json.loads(refused.stdout)["refusal"]
    assert f"release {first['target']} may not go live again" in refusal and "is revoked" in refusal
    for name, view in views.items():
        assert view.current_release(deploy_to) == second["target"]
        assert view.sh("ls -a %s", f"{deploy_to}/.deployer") == before[name]  # no pin, no bad mark
    forced = run_inv("rollback", "--inventory", signed["inventory"], "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "SWITCHING ANYWAY (--force)" in forced.stdout
    assert {view.version(deploy_to) for view in views.values()} == {"v1"}


def test_a_commit_signed_with_sign_git_deploys_with_deploy_git(signed, views, deploy_to):
    from tests.conftest import git

    folder = signed["folder"] / "repo"
    folder.mkdir()
    git(folder, "init", "-q", "-b", "main")
    (folder / "VERSION").write_text("from git\n")
    git(folder, "add", ".")
    git(folder, "commit", "-q", "-m", "first")
    commit = git(folder, "rev-parse", "HEAD").strip()
    tarball = str(signed["folder"] / "release.tar.gz")
    made = run_inv("sign", tarball, "--git", "main", "--repo", str(folder), "--key", signed["ci"], "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["commit"] == commit
    unsigned = run_inv("deploy", "-i", signed["inventory"], "--git", "main", "--repo", str(folder))
    assert unsigned.returncode == 2 and "is not signed" in unsigned.stderr
    done = run_inv(
        "deploy", "-i", signed["inventory"], "--git", "main", "--repo", str(folder), "--signature", tarball + ".sig"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for view in views.values():
        assert view.version(deploy_to) == "from git"
        release = view.current_release(deploy_to)
        assert view.sh("cat %s", f"{deploy_to}/.deployer/meta/{release}").split()[-2] == "ci@example.org"
    again = run_inv("sign", tarball, "--git", "main", "--repo", str(folder), "--key", signed["ci"])
    assert again.returncode == 2 and "exists already" in again.stderr
