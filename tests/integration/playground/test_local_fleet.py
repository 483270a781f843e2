"""The local fleet itself: separate hosts with their own identity and filesystem."""

import json
import socket

import pytest

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
