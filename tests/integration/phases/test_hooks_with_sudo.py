"""sudo for hooks: the hooks of `sudo: true` hosts run as root, the password is asked once (or read
from an environment variable) and never printed, logged, written or put on a command line.

The machine gets a sudoers drop-in for the fleet's `deploy` user and a password for it for the
duration of this module; both are put back afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer.playground.deploy_user import DEPLOY_USER, users_lock
from deployer.playground.localfleet import LocalFleet
from tests.conftest import run_inv, run_on_a_terminal

SUDOERS = "/etc/sudoers.d/zz-deployer-tests"
PASSWORD = "Pw-" + secrets.token_hex(8)

HOOK = (
    'id -u > "$DEPLOYER_DEPLOY_TO/$HOOK_NAME.uid"; '
    'printf "%s|%s|[%s]" "$DEPLOYER_RELEASE" "$APP_TOKEN" "$SPACED" > "$DEPLOYER_DEPLOY_TO/$HOOK_NAME.env"; '
    'cat /proc/[0-9]*/cmdline > "$DEPLOYER_DEPLOY_TO/$HOOK_NAME.cmdlines" 2>/dev/null; true'
)


@pytest.fixture(scope="module")
def sudo_for_deploy() -> Iterator[None]:
    if shutil.which("sudo") is None:
        pytest.fail("sudo is not installed (./dev.sh setup installs it)")
    saved = subprocess.run(["getent", "shadow", DEPLOY_USER], capture_output=True, text=True, check=True)
    old_hash = saved.stdout.split(":")[1]
    if os.path.exists(SUDOERS):  # a run killed before its teardown: that hash is its test password
        old_hash = "*"
    with users_lock():  # another worker's fleet may be running useradd/usermod right now
        subprocess.run(["chpasswd"], input=f"{DEPLOY_USER}:{PASSWORD}\n", text=True, check=True)
    Path(SUDOERS).write_text(f"Defaults:{DEPLOY_USER} timestamp_timeout=0, !lecture\n{DEPLOY_USER} ALL=(root) ALL\n")
    os.chmod(SUDOERS, 0o440)
    subprocess.run(["visudo", "-cf", SUDOERS], check=True, capture_output=True)
    try:
        yield
    finally:
        os.remove(SUDOERS)
        with users_lock():
            subprocess.run(["usermod", "-p", old_hash, DEPLOY_USER], check=True)


def sudo_inventory(make_inventory, hosts=None, password_line="sudo_password_env: TEST_SUDO_PASSWORD", hooks=None):  # type: ignore[no-untyped-def]
    hooks = hooks or {"after_switch": HOOK}
    lines = [
        "groups:",
        "  privileged: {sudo: true}",
        password_line,
        "env:",
        "  APP_TOKEN: {value: tok-123, secret: true}",
        '  SPACED: "  two  words  "',  # kept whole through sudo as without it (leading/trailing spaces too)
    ]
    lines += [
        "hooks:",
        *(f"  {name}: {json.dumps(command.replace('$HOOK_NAME', name))}" for name, command in hooks.items()),
    ]
    return make_inventory(
        hosts=hosts, groups={name: ["privileged"] for name in ("web1", "web2", "web3")}, extra="\n".join(lines) + "\n"
    )


def host_file(fleet: LocalFleet, name: str, path: str) -> Path:
    return Path(fleet.host(name).srv, path[len("/srv/") :])


def everything_under(fleet: LocalFleet, name: str, folder: str) -> str:
    root = host_file(fleet, name, folder)
    texts = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            texts.append(path.read_text(errors="replace"))
    return "\n".join(texts)


def test_hooks_of_sudo_hosts_run_as_root_with_the_password_never_shown(
    sudo_for_deploy, make_inventory, local_fleet, artifacts, deploy_to, tmp_path
):
    inventory = sudo_inventory(make_inventory)  # web1-web3 in the sudo group, web4 not
    env = {**os.environ, "TEST_SUDO_PASSWORD": PASSWORD, "DEPLOYER_LOG_DIR": str(tmp_path / "runs")}
    for version in ("v1", "v2"):
        done = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts[version], "-v", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert PASSWORD not in done.stdout + done.stderr
    deploy_uid = str(subprocess.run(["id", "-u", DEPLOY_USER], capture_output=True, text=True).stdout.strip())
    for name in ("web1", "web2", "web3", "web4"):
        uid = host_file(local_fleet, name, f"{deploy_to}/after_switch.uid").read_text().strip()
        assert uid == ("0" if name != "web4" else deploy_uid)
        release = os.readlink(host_file(local_fleet, name, f"{deploy_to}/current")).split("/", 1)[1]
        # the hook saw its variables (and the inventory's secret) through sudo
        seen = host_file(local_fleet, name, f"{deploy_to}/after_switch.env").read_text()
        assert seen == f"{release}|tok-123|[  two  words  ]"
        # nowhere on the host: not in any file the tool or the hook wrote, not in any process's command line
        assert PASSWORD not in everything_under(local_fleet, name, deploy_to)
        assert not list(host_file(local_fleet, name, f"{deploy_to}/.deployer").rglob("sudo-env.*"))
    logs = "\n".join(path.read_text() for path in (tmp_path / "runs").rglob("*") if path.is_file())
    assert logs and PASSWORD not in logs


def test_a_wrong_password_fails_the_hook_clearly_and_nothing_is_switched(
    sudo_for_deploy, make_inventory, local_fleet, views, artifacts, deploy_to
):
    inventory = sudo_inventory(make_inventory, hosts=["web1", "web2"], hooks={"before_switch": HOOK})
    env = {**os.environ, "TEST_SUDO_PASSWORD": PASSWORD}
    assert run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v1"], env=env).returncode == 0
    wrong = {**os.environ, "TEST_SUDO_PASSWORD": "not-" + PASSWORD}
    done = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v2"], env=wrong)
    assert done.returncode == 1
    assert "before_switch hook failed" in done.stdout + done.stderr
    assert "incorrect password" in done.stdout + done.stderr
    assert {views[name].version(deploy_to) for name in ("web1", "web2")} == {"v1"}


def test_without_a_password_sudo_must_not_prompt_on_the_host(sudo_for_deploy, make_inventory, views, artifacts):
    inventory = sudo_inventory(make_inventory, hosts=["web1"], password_line="", hooks={"before_switch": HOOK})
    done = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v1"])
    assert done.returncode == 1
    assert "a password is required" in done.stdout + done.stderr  # sudo -n: refused at once, no hang


def test_the_password_is_asked_once_for_all_hosts_and_hooks(
    sudo_for_deploy, make_inventory, local_fleet, views, artifacts, deploy_to
):
    inventory = sudo_inventory(
        make_inventory, hosts=["web1", "web2", "web3"], password_line="sudo_password: ask",
        hooks={"before_switch": HOOK, "after_switch": HOOK},
    )  # fmt: skip
    code, transcript = run_on_a_terminal(["deploy", "--inventory", inventory, "--artifact", artifacts["v1"]], PASSWORD)
    assert code == 0, transcript
    assert transcript.count("sudo password") == 1
    assert PASSWORD not in transcript  # not echoed, not printed
    for name in ("web1", "web2", "web3"):
        assert views[name].version(deploy_to) == "v1"
        for hook in ("before_switch", "after_switch"):
            assert host_file(local_fleet, name, f"{deploy_to}/{hook}.uid").read_text().strip() == "0"

    no_terminal = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v2"])
    assert no_terminal.returncode == 2
    assert "needs a terminal" in no_terminal.stderr and "sudo_password_env" in no_terminal.stderr
    assert {views[name].version(deploy_to) for name in ("web1", "web2", "web3")} == {"v1"}


def test_sudo_requiring_a_terminal_is_named_as_the_cause(sudo_for_deploy, make_inventory, views, artifacts, deploy_to):
    """RHEL's `Defaults requiretty`: the hook fails with the reason and the sudoers line that fixes it."""
    inventory = sudo_inventory(make_inventory, hosts=["web1", "web3"], hooks={"before_switch": HOOK})
    env = {**os.environ, "TEST_SUDO_PASSWORD": PASSWORD}
    assert run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v1"], env=env).returncode == 0
    requiretty = SUDOERS + "-requiretty"
    Path(requiretty).write_text(f"Defaults:{DEPLOY_USER} requiretty\n")
    os.chmod(requiretty, 0o440)
    try:
        done = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v2"], env=env)
    finally:
        os.remove(requiretty)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "before_switch hook failed" in out and "Defaults requiretty" in out, out
    assert f"Defaults:{DEPLOY_USER} !requiretty" in out, out
    assert {views[name].version(deploy_to) for name in ("web1", "web3")} == {"v1"}
