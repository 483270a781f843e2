"""The local fleet itself: separate hosts with their own identity and filesystem."""

import json
import pwd
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from deployer.playground.deploy_user import DEPLOY_USER, authorize, revoke
from tests.conftest import run_inv

pytestmark = pytest.mark.fleet


def test_each_host_has_its_own_hostname_key_and_srv(local_fleet, views):
    names = [h.name for h in local_fleet.hosts()]
    assert [views[n].hostname() for n in names] == names
    for name in names:
        views[name].sh("echo %s > /srv/whoami", name)
    for name in names:
        assert views[name].sh("cat /srv/whoami") == name
        assert views[name].sh("id -un") == "deploy"
    keys = {line.split()[2] for line in open(local_fleet.known_hosts)}
    assert len(keys) == len(names)


def test_fleet_up_and_down_report_as_json(tmp_path):
    state = str(tmp_path / "fleet")
    up = run_inv("fleet-up", "--count", "2", "--state-dir", state, "--subnet", "127.0.8", "--json")
    assert up.returncode == 0, up.stderr
    data = json.loads(up.stdout)
    assert [h["name"] for h in data["hosts"]] == ["web1", "web2"]
    for host in data["hosts"]:  # really listening, independently of the tool
        with socket.create_connection((host["address"], host["port"]), timeout=5) as connection:
            assert connection.recv(64).startswith(b"SSH-2.0-")
    down = run_inv("fleet-down", "--state-dir", state, "--json")
    assert down.returncode == 0 and json.loads(down.stdout) == {"stopped": ["web1", "web2"]}
    with pytest.raises(OSError):
        socket.create_connection((data["hosts"][0]["address"], data["hosts"][0]["port"]), timeout=2)


def _login(fleet, key: str) -> int:
    """Exit status of `true` on the fleet's first host, logging in with `key` only."""
    command = fleet.ssh_command(fleet.hosts()[0].name, "true")
    command[command.index("-i") + 1] = key
    return subprocess.run(command, capture_output=True, timeout=30).returncode


def test_a_key_taken_back_leaves_the_keys_added_meanwhile(local_fleet, tmp_path):
    """Every fleet on the machine logs in through one authorized_keys: a test's key removed at its end
    takes nothing else with it (restoring a copy read earlier locked the soak's fleet out, mid-run)."""
    keys = {}
    for name in ("borrowed", "meanwhile"):
        path = tmp_path / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True)
        keys[name] = str(path)
    authorize(Path(keys["borrowed"] + ".pub").read_text())
    assert _login(local_fleet, keys["borrowed"]) == 0
    authorize(Path(keys["meanwhile"] + ".pub").read_text())  # another fleet starting on the machine
    revoke(Path(keys["borrowed"] + ".pub").read_text())
    try:
        assert _login(local_fleet, keys["borrowed"]) != 0
        assert _login(local_fleet, keys["meanwhile"]) == 0
        assert _login(local_fleet, local_fleet.identity_file) == 0
    finally:
        revoke(Path(keys["meanwhile"] + ".pub").read_text())
    assert _login(local_fleet, local_fleet.identity_file) == 0


def test_fleets_starting_at_once_all_keep_their_keys():
    keys = [f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{i:038d} concurrent-{i}" for i in range(24)]
    authorized = Path(pwd.getpwnam(DEPLOY_USER).pw_dir, ".ssh", "authorized_keys")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(authorize, keys))
    try:
        lines = authorized.read_text().splitlines()
        assert all(lines.count(key) == 1 for key in keys)
    finally:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(revoke, keys))
    lines = authorized.read_text().splitlines()
    assert not any(key in lines for key in keys)
