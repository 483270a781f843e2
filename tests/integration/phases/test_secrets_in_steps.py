"""Secrets reach validate, hooks and health checks on real hosts, and nothing else: not the report,
the JSON, the history, the host's process list; an encrypted key is opened with its passphrase."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deployer.playground.deploy_user import authorize, revoke
from tests.conftest import REPO, run_inv

pytestmark = pytest.mark.fleet
SECRET = "pa55 'w0rd' $(touch /tmp/pwned) \"x\""
ENV = "env:\n  APP_ENV: staging\n  DB_PASSWORD: {from_env: TEST_DB_PASSWORD, secret: true}\n"


def test_secret_env_is_usable_on_hosts_and_never_shown(make_inventory, views, artifacts, deploy_to, tmp_path):
    seen = f"{deploy_to}-seen"
    inventory = make_inventory(
        extra=ENV + f"hooks: {{after_switch: 'printf %s \"$DB_PASSWORD|$APP_ENV\" > {seen}; sleep 3'}}\n"
    )
    env = {"TEST_DB_PASSWORD": SECRET}
    process = subprocess.Popen(
        [sys.executable, "-m", "invoke", "deploy", "--inventory", inventory, "--artifact", artifacts["v1"]],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    # While the hook runs, no process on the host shows the secret in its command line.
    deadline = time.monotonic() + 30
    while views["web1"].host.run("test -e %s", seen).rc != 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    cmdlines = views["web1"].host.run("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '").stdout
    assert "w0rd" not in cmdlines
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, out + err
    for view in views.values():
        assert view.sh("cat %s", seen) == SECRET + "|staging"
        assert "w0rd" not in view.sh("cat %s", f"{deploy_to}/.deployer/history.jsonl")
        assert view.host.run("test -e /tmp/pwned").rc == 1

    # A validation that prints the secret: the report shows *** instead, in text and JSON.
    leaky = make_inventory(extra=ENV, validate='echo "connecting with $DB_PASSWORD" >&2; exit 1')
    env = {**env, "DEPLOYER_LOG_DIR": str(tmp_path / "logs")}
    for extra_args in ((), ("--json",), ("-v",)):
        result = run_inv("deploy", "--inventory", leaky, "--artifact", artifacts["v2"], *extra_args, env=env)
        assert result.returncode == 1
        assert "connecting with ***" in result.stdout
        assert "w0rd" not in result.stdout + result.stderr
    logs = list(Path(env["DEPLOYER_LOG_DIR"]).glob("*.log"))
    assert len(logs) == 3 and all("w0rd" not in log.read_text() for log in logs)
    assert any("connecting with ***" in log.read_text() for log in logs)


@pytest.fixture
def encrypted_key(tmp_path):
    key = tmp_path / "id_encrypted"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "correct horse", "-f", str(key), "-C", "encrypted-test"], check=True
    )
    public = key.with_suffix(".pub").read_text()
    # Only this key is added and then removed: the file is every running fleet's (the soak's too).
    authorize(public)
    try:
        yield str(key)
    finally:
        revoke(public)


def test_encrypted_identity_file_with_passphrase_from_the_environment(
    make_inventory, views, artifacts, deploy_to, encrypted_key, local_fleet
):
    text = Path(make_inventory()).read_text()
    text = text.replace(local_fleet.identity_file, encrypted_key).replace(
        "  known_hosts:", "  passphrase_env: KEY_PASSPHRASE\n  known_hosts:"
    )
    inventory = Path(deploy_to.replace("/srv/", "/tmp/") + "-inventory.yml")
    inventory.write_text(text)
    try:
        good = run_inv(
            "deploy",
            "--inventory",
            str(inventory),
            "--artifact",
            artifacts["v1"],
            env={"KEY_PASSPHRASE": "correct horse"},
        )
        assert good.returncode == 0, good.stdout + good.stderr
        assert {view.version(deploy_to) for view in views.values()} == {"v1"}

        wrong = run_inv("status", "--inventory", str(inventory), env={"KEY_PASSPHRASE": "battery staple"})
        assert wrong.returncode == 1 and "UNREACHABLE" in wrong.stdout
        assert "battery" not in wrong.stdout + wrong.stderr and "Traceback" not in wrong.stderr

        unset = run_inv("status", "--inventory", str(inventory))
        assert unset.returncode == 2 and "ssh.passphrase_env: $KEY_PASSPHRASE is not set" in unset.stderr
    finally:
        inventory.unlink()
