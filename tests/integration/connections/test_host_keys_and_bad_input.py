"""Host keys are verified; bad input is refused with a clear message before anything is contacted."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import FLEET_SUBNET, run_inv

pytestmark = pytest.mark.fleet


def _sessions_in_logs(local_fleet) -> int:
    return sum(open(h.log).read().count("Starting session") for h in local_fleet.hosts())


def test_unknown_host_key_is_refused_and_nothing_changes(
    local_fleet, make_inventory, views, artifacts, deploy_to, tmp_path
):
    known = tmp_path / "known_hosts"
    lines = open(local_fleet.known_hosts).read().splitlines()
    known.write_text("\n".join(line for line in lines if f"{FLEET_SUBNET}.3" not in line) + "\n")
    inventory = make_inventory(known_hosts=str(known))
    result = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v1"])
    assert result.returncode == 3  # refused as a whole: nothing changed anywhere
    assert "web3" in result.stdout and "not in known_hosts" in result.stdout
    assert "Traceback" not in result.stderr
    assert all(view.current_link(deploy_to) is None for view in views.values())
    assert known.read_text().count(f"{FLEET_SUBNET}.3") == 0  # not silently added


def test_changed_host_key_is_refused(local_fleet, make_inventory, views, artifacts, deploy_to, tmp_path):
    known = tmp_path / "known_hosts"
    lines = open(local_fleet.known_hosts).read().splitlines()
    other_key = lines[0].split()[2]  # web1's key, claimed for web2
    known.write_text(
        "\n".join(
            " ".join([line.split()[0], line.split()[1], other_key]) if f"{FLEET_SUBNET}.2" in line else line
            for line in lines
        )
        + "\n"
    )
    inventory = make_inventory(known_hosts=str(known))
    result = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v1"])
    assert result.returncode == 3  # refused as a whole: nothing changed anywhere
    assert "HOST KEY CHANGED" in result.stdout and "web2" in result.stdout
    assert all(view.current_link(deploy_to) is None for view in views.values())
    accept = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v1"], "--accept-new-host-keys")
    assert accept.returncode == 3 and "HOST KEY CHANGED" in accept.stdout  # never accepted, even opted in


def test_accept_new_host_keys_adds_unknown_keys_loudly(
    local_fleet, make_inventory, views, artifacts, deploy_to, tmp_path
):
    known = tmp_path / "known_hosts"
    known.write_text("")
    inventory = make_inventory(known_hosts=str(known))
    result = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v1"], "--accept-new-host-keys")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "added new host key" in result.stderr
    assert sorted(known.read_text().split()[2::3]) == sorted(open(local_fleet.known_hosts).read().split()[2::3])


@pytest.mark.parametrize(
    "extra, words",
    [("bogus_key: 1\n", "bogus_key: unknown key"), ("parallel: lots\n", "parallel: expected an integer")],
)
def test_malformed_inventory_contacts_nobody(local_fleet, make_inventory, artifacts, extra, words):
    inventory = make_inventory(extra=extra)
    before = _sessions_in_logs(local_fleet)
    result = run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v1"])
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {inventory}: ") and words in result.stderr
    assert "Traceback" not in result.stderr
    assert _sessions_in_logs(local_fleet) == before


def test_inventory_from_environment_and_missing_inventory(make_inventory, artifacts, views, deploy_to, tmp_path):
    result = run_inv("status", env={"DEPLOYER_INVENTORY": make_inventory()})
    assert result.returncode == 0 and "web1" in result.stdout
    elsewhere = tmp_path / "empty"  # no -i, no variable, no deploy.yml or inventories/ here
    elsewhere.mkdir()
    missing = subprocess.run(
        [sys.executable, "-m", "deployer.console", "status"],
        cwd=elsewhere,
        env={**os.environ, "DEPLOYER_INVENTORY": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2 and "no inventory given and none found in" in missing.stderr
    assert "-i FILE" in missing.stderr and "deployer init" in missing.stderr and "Traceback" not in missing.stderr


def test_unsafe_artifact_is_refused_before_upload(local_fleet, make_inventory, tmp_path, views, deploy_to):
    import io
    import tarfile

    bad = tmp_path / "evil.tar.gz"
    with tarfile.open(bad, "w:gz") as archive:
        info = tarfile.TarInfo("../../etc/cron.d/evil")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    before = _sessions_in_logs(local_fleet)
    result = run_inv("deploy", "--inventory", make_inventory(), "--artifact", str(bad))
    assert result.returncode == 2 and "../../etc/cron.d/evil" in result.stderr
    assert _sessions_in_logs(local_fleet) == before
