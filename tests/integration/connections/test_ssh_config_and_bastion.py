"""Inventories like the ones people have: hosts by their ssh_config alias, ProxyJump and gateway
bastions, per-group and per-host deploy_to.

A fleet of its own (127.0.6.x, sshd at LogLevel DEBUG1 so the bastion's log records every
tunnel it opens): web1 is the bastion, web2 and web3 are the hosts deployed to. What happened is
read from each sshd's own log and from each host's own filesystem, not from the tool's output.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer.playground.localfleet import LocalFleet
from tests.conftest import REPO, run_inv, yaml_quote

SUBNET = "127.0.6"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    local = LocalFleet(str(tmp_path_factory.mktemp("bastion-fleet")))
    local.up(3, subnet=SUBNET, port=2222, log_level="DEBUG1")
    yield local
    local.down()


def log_of(fleet: LocalFleet, name: str) -> str:
    return Path(fleet.host(name).log).read_text(errors="replace")


def tunnels(fleet: LocalFleet, name: str) -> list[str]:
    """Targets of the direct-tcpip channels the host's sshd opened (as a bastion)."""
    return re.findall(r"server_request_direct_tcpip: originator .*?, target (\S+) port (\d+)", log_of(fleet, name))


def on_host(fleet: LocalFleet, name: str, path: str) -> Path:
    """`path` (under /srv) on the host, read from the host's own folder on this machine."""
    assert path.startswith("/srv/")
    return Path(fleet.host(name).srv, path[len("/srv/") :])


def current_of(fleet: LocalFleet, name: str, deploy_to: str) -> str | None:
    link = on_host(fleet, name, f"{deploy_to}/current")
    return os.readlink(link) if link.is_symlink() else None


def base_lines(fleet: LocalFleet, deploy_to: str, ssh_extra: str = "", known_hosts: str | None = None) -> list[str]:
    return [
        f"deploy_to: {yaml_quote(deploy_to)}",
        "user: deploy",
        "ssh:",
        f"  identity_file: {yaml_quote(fleet.identity_file)}",
        f"  known_hosts: {yaml_quote(known_hosts or fleet.known_hosts)}",
        *([ssh_extra] if ssh_extra else []),
        "timeouts: {connect: 5, command: 30, stage: 120}",
    ]


def write(tmp_path: Path, name: str, lines: list[str]) -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def ssh_config(fleet: LocalFleet, tmp_path: Path, jump: bool) -> str:
    lines = []
    for name, alias in (("web2", "app-two"), ("web3", "app-three")):
        host = fleet.host(name)
        lines += [f"Host {alias}", f"  HostName {host.address}", f"  Port {host.port}", "  User deploy"]
        lines.append(f"  IdentityFile {fleet.identity_file}")
    if jump:
        bastion = fleet.host("web1")
        lines += ["Host bastion", f"  HostName {bastion.address}", f"  Port {bastion.port}", "  User deploy"]
        lines += ["Host app-*", "  ProxyJump bastion"]
    return write(tmp_path, "ssh_config", lines)


def by_alias(fleet: LocalFleet, tmp_path: Path, config: str, deploy_to: str, host_lines: list[str]) -> str:
    """An inventory using `config` as its ssh.config, with hosts given by alias."""
    lines = [*base_lines(fleet, deploy_to, f"  config: {yaml_quote(config)}"), "hosts:", *host_lines]
    return write(tmp_path, "inventory.yml", lines)


def test_hosts_given_by_their_ssh_config_alias(fleet: LocalFleet, tmp_path: Path, artifacts: dict[str, str]) -> None:
    config = ssh_config(fleet, tmp_path, jump=False)
    deploy_to = "/srv/by-alias"
    inventory = by_alias(fleet, tmp_path, config, deploy_to, ["  app-two: {}", "  three: {ssh_alias: app-three}"])
    done = run_inv("deploy", "-i", inventory, "--artifact", artifacts["v1"], "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    release = json.loads(done.stdout)["target"]
    for name in ("web2", "web3"):  # app-two and app-three resolve to these hosts
        assert current_of(fleet, name, deploy_to) == f"releases/{release}"
        assert on_host(fleet, name, f"{deploy_to}/current/VERSION").read_text().strip() == "v1"
    assert current_of(fleet, "web1", deploy_to) is None
    checked = run_inv("verify", "-i", inventory, "--release", release)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_proxyjump_bastion_is_connected_once_and_tunnels_to_each_host(
    fleet: LocalFleet, tmp_path: Path, artifacts: dict[str, str]
) -> None:
    config = ssh_config(fleet, tmp_path, jump=True)
    deploy_to = "/srv/via-proxyjump"
    inventory = by_alias(fleet, tmp_path, config, deploy_to, ["  app-two: {}", "  app-three: {}"])
    for artifact in ("v1", "v2"):
        before = fleet.ssh_counts()
        tunnels_before = len(tunnels(fleet, "web1"))
        done = run_inv("deploy", "-i", inventory, "--artifact", artifacts[artifact])
        assert done.returncode == 0, done.stdout + done.stderr
        after = fleet.ssh_counts()
        # the bastion: one connection for the whole deploy, no commands run on it, one tunnel per host
        assert after["web1"][0] - before["web1"][0] == 1
        assert after["web1"][1] - before["web1"][1] == 0
        new_tunnels = tunnels(fleet, "web1")[tunnels_before:]
        assert sorted(new_tunnels) == sorted((fleet.host(n).address, "2222") for n in ("web2", "web3"))
        for name in ("web2", "web3"):
            assert after[name][0] - before[name][0] == 1  # still one connection per host, through the tunnel
            assert on_host(fleet, name, f"{deploy_to}/current/VERSION").read_text().strip() == artifact
    rolled = run_inv("rollback", "-i", inventory)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    for name in ("web2", "web3"):
        assert on_host(fleet, name, f"{deploy_to}/current/VERSION").read_text().strip() == "v1"
    checked = run_inv("verify", "-i", inventory)  # testinfra over OpenSSH, through the same ProxyJump
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_inventory_gateway_for_a_group(fleet: LocalFleet, tmp_path: Path, artifacts: dict[str, str]) -> None:
    bastion = fleet.host("web1")
    deploy_to = "/srv/via-gateway"
    lines = [*base_lines(fleet, deploy_to), "groups:", f"  private: {{gateway: 'deploy@{bastion.address}:2222'}}"]
    lines.append("hosts:")
    for name in ("web2", "web3"):
        lines.append(f"  {name}: {{address: {fleet.host(name).address}, port: 2222, groups: [private]}}")
    inventory = write(tmp_path, "inventory.yml", lines)
    tunnels_before = len(tunnels(fleet, "web1"))
    done = run_inv("deploy", "-i", inventory, "--artifact", artifacts["v1"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(tunnels(fleet, "web1")) - tunnels_before == 2
    for name in ("web2", "web3"):
        assert on_host(fleet, name, f"{deploy_to}/current/VERSION").read_text().strip() == "v1"


def test_a_bastion_with_an_unknown_host_key_is_refused_and_nothing_changes(
    fleet: LocalFleet, tmp_path: Path, artifacts: dict[str, str]
) -> None:
    bastion = fleet.host("web1")
    known = [line for line in Path(fleet.known_hosts).read_text().splitlines() if bastion.address not in line]
    known_hosts = write(tmp_path, "known_hosts", known)
    deploy_to = "/srv/unknown-bastion"
    lines = [*base_lines(fleet, deploy_to, known_hosts=known_hosts), f"gateway: 'deploy@{bastion.address}:2222'"]
    lines += ["hosts:", *(f"  {n}: {{address: {fleet.host(n).address}, port: 2222}}" for n in ("web2", "web3"))]
    inventory = write(tmp_path, "inventory.yml", lines)
    done = run_inv("deploy", "-i", inventory, "--artifact", artifacts["v1"])
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert f"gateway deploy@{bastion.address}:2222" in output
    assert "not in known_hosts" in output
    assert "Traceback" not in output
    for name in ("web2", "web3"):
        assert not on_host(fleet, name, deploy_to).exists()


def test_ssh_config_problems_are_named_before_anything_is_contacted(fleet: LocalFleet, tmp_path: Path) -> None:
    config = write(tmp_path, "ssh_config", ["Host app-two", "  HostName 127.0.6.2", "  ProxyCommand nc %h %p"])
    cases = {
        "  ghost: {}": "no Host entry for 'ghost'",
        "  app-two: {}": "ProxyCommand",
    }
    for host_line, message in cases.items():
        inventory = by_alias(fleet, tmp_path, config, "/srv/x", [host_line])
        done = run_inv("status", "-i", inventory)
        assert done.returncode == 2, done.stdout + done.stderr
        assert message in done.stderr and "hosts." in done.stderr
        assert "Traceback" not in done.stderr


def process_tree(root: int) -> list[int]:
    """`root` and every process under it, read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree = [root]
    for pid in tree:
        tree += [child for child, parent in parents.items() if parent == pid]
    return tree


def test_a_host_behind_a_bastion_that_goes_silent_is_noticed_by_keepalives(
    fleet: LocalFleet, tmp_path: Path, artifacts: dict[str, str]
) -> None:
    """web2, reached through the bastion web1, stops answering in the middle of a step (its sshd
    frozen: the TCP connection from the bastion stays up, nothing comes back). The step may take
    900 s; before, the run waited all of it (TCP keepalive cannot see through a tunnel). Now the
    keepalives that expect an answer close web2's connection and the run ends with web2 lost."""
    bastion = fleet.host("web1")
    deploy_to = "/srv/silent-behind-bastion"
    marker = f"{deploy_to}/hook-started"
    hook = f'if [ "$(hostname)" = web2 ]; then touch {marker}; sleep 600; fi'
    lines = [*base_lines(fleet, deploy_to), f"gateway: 'deploy@{bastion.address}:2222'"]
    lines[-2] = "timeouts: {connect: 5, command: 30, stage: 900, hook: 900}"
    lines += [f"hooks: {{before_switch: {json.dumps(hook)}}}", "hosts:"]
    lines += [f"  {n}: {{address: {fleet.host(n).address}, port: 2222}}" for n in ("web2", "web3")]
    inventory = write(tmp_path, "inventory.yml", lines)
    deploy = subprocess.Popen(
        [sys.executable, "-m", "invoke", "deploy", "-i", inventory, "--artifact", artifacts["v1"], "--json"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    frozen: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not on_host(fleet, "web2", marker).exists():
            assert deploy.poll() is None and time.monotonic() < deadline, deploy.communicate()
            time.sleep(0.1)
        web2 = fleet.pid("web2")
        assert web2 is not None
        frozen = process_tree(web2)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        out, err = deploy.communicate(timeout=240)
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        if deploy.poll() is None:
            deploy.kill()
    report = json.loads(out)
    web2_result = next(host for host in report["hosts"] if host["host"] == "web2")
    assert web2_result["status"] == "failed" and "connection was lost" in web2_result["message"], web2_result
    assert current_of(fleet, "web2", deploy_to) is None  # never switched
