"""`deployer init`'s readers (host lists, ssh_config, Ansible INI/YAML), its key confirmation and the
inventory it writes; and where the inventory is found when none is named (`deployer.locate`)."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from deployer import init
from deployer.errors import InputError
from deployer.inventory import load_inventory
from deployer.locate import find_inventory

ED25519 = "ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519" + bytes(36)).decode()


def fingerprint(line: str) -> str:
    blob = base64.b64decode(line.split()[-1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1", [("10.0.0.1", "10.0.0.1", 22, "")]),
        ("web1=10.0.0.1:2222, web2=ops@10.0.0.2", [("web1", "10.0.0.1", 2222, ""), ("web2", "10.0.0.2", 22, "ops")]),
        (
            "db=[fd00::5]:2200\n# a comment\ncache=[fd00::6]",
            [("db", "fd00::5", 2200, ""), ("cache", "fd00::6", 22, "")],
        ),
        ("web1.example.com:22 # the first", [("web1.example.com", "web1.example.com", 22, "")]),
    ],
)
def test_host_list(text: str, expected: list[tuple[str, str, int, str]]) -> None:
    assert [(t.name, t.address, t.port, t.user) for t in init.from_host_list(text)] == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("web1=10.0.0.1:http", "port 'http' is not a port number"),
        ("bad!name=1.2.3.4", "not usable as a host name"),
        ("x=:22", "has no address"),
        ("web=10.0.0.1:70000", "not a port number"),
    ],
)
def test_host_list_refuses(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        init.from_host_list(text)


ANSIBLE_INI = """
# production
bastion-free ansible_host=10.1.0.9

[web]
web[01:03] ansible_port=2222
canary ansible_host=10.1.0.10 ansible_user='ops'

[db]
db1 ansible_host=10.2.0.1

[all:vars]
ansible_user=deploy

[web:vars]
ansible_ssh_private_key_file=~/.ssh/web_key

[prod:children]
web
db
"""


def test_ansible_ini_hosts_groups_vars_and_ranges(tmp_path: Path) -> None:
    path = tmp_path / "hosts.ini"
    path.write_text(ANSIBLE_INI)
    targets = {t.name: t for t in init.from_ansible(str(path))}
    assert list(targets) == ["bastion-free", "web01", "web02", "web03", "canary", "db1"]
    assert (targets["web02"].address, targets["web02"].port, targets["web02"].user) == ("web02", 2222, "deploy")
    assert targets["web02"].groups == ["web", "prod"]
    assert targets["web02"].identity_file == os.path.expanduser("~/.ssh/web_key")
    assert (targets["canary"].address, targets["canary"].user) == ("10.1.0.10", "ops")  # host vars win
    assert targets["db1"].groups == ["db", "prod"] and targets["db1"].identity_file == ""
    assert targets["bastion-free"].groups == []


def test_ansible_yaml_with_children(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yml"
    path.write_text(
        "all:\n"
        "  vars: {ansible_user: deploy}\n"
        "  children:\n"
        "    web:\n"
        "      vars: {ansible_port: 2200}\n"
        "      hosts:\n"
        "        web1: {ansible_host: 10.0.0.1}\n"
        "        web2: {ansible_host: 10.0.0.2, ansible_port: 22}\n"
        "      children:\n"
        "        canary:\n"
        "          hosts: {web-canary: {ansible_host: 10.0.0.9}}\n"
    )
    targets = {t.name: t for t in init.from_ansible(str(path))}
    assert (targets["web1"].port, targets["web2"].port) == (2200, 22)
    assert targets["web-canary"].groups == ["canary", "web"] and targets["web-canary"].port == 2200
    assert {t.user for t in targets.values()} == {"deploy"}


def test_ssh_config_hosts(tmp_path: Path) -> None:
    path = tmp_path / "ssh_config"
    path.write_text(
        "Host *\n  User deploy\n\nHost web1 web1.alias\n  HostName 10.0.0.1\n  Port 2222\n"
        "  IdentityFile ~/.ssh/fleet\n\nHost web2\n  HostName 10.0.0.2\n"
    )
    targets = init.from_ssh_config(str(path))
    assert [(t.name, t.address, t.port, t.user) for t in targets] == [
        ("web1", "10.0.0.1", 2222, "deploy"),
        ("web1.alias", "10.0.0.1", 2222, "deploy"),
        ("web2", "10.0.0.2", 22, "deploy"),
    ]
    path.write_text("Host web3\n  HostName 10.0.0.3\n  ProxyJump bastion\n")
    with pytest.raises(InputError, match="web3 is reached through a bastion"):
        init.from_ssh_config(str(path))


def test_only_confirmed_keys_are_kept() -> None:
    other = "ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519" + bytes([1] * 36)).decode()
    keys = {"web1": [f"[10.0.0.1]:2222 {ED25519}"], "web2": [f"10.0.0.2 {other}", f"10.0.0.2 {ED25519}"]}
    kept = init.keep_accepted(keys, {fingerprint(ED25519)}, "prints.txt")
    assert kept == {"web1": [f"[10.0.0.1]:2222 {ED25519}"], "web2": [f"10.0.0.2 {ED25519}"]}
    with pytest.raises(InputError, match=r"host keys not in prints.txt: web1 \(SHA256:.*nothing was written"):
        init.keep_accepted(keys, {fingerprint(other)}, "prints.txt")


def test_written_inventory_loads_and_keeps_groups(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("not read here")
    targets = [
        init.Target("web1", "10.0.0.1", 2222, "deploy", groups=["web"]),
        init.Target("jobs1", "10.0.0.5", 22, "jobs", groups=["worker"]),
    ]
    keys = {"web1": [f"[10.0.0.1]:2222 {ED25519}"], "jobs1": [f"10.0.0.5 {ED25519}"]}
    out = tmp_path / "ops" / "prod.yml"
    written = init.write(
        targets, keys, str(out), user=None, deploy_to="/srv/shop", identity_file=str(key), source="a host list"
    )
    inventory = load_inventory(written.inventory)
    assert [(h.name, h.address, h.port, h.user) for h in inventory.hosts] == [
        ("web1", "10.0.0.1", 2222, "deploy"),
        ("jobs1", "10.0.0.5", 22, "jobs"),
    ]
    assert inventory.user == "deploy" and inventory.deploy_to == "/srv/shop"
    assert Path(written.known_hosts).read_text() == "".join(line + "\n" for lines in keys.values() for line in lines)
    with pytest.raises(InputError, match="already exist: pass --force"):
        init.write(targets, keys, str(out), user=None, deploy_to="/srv/shop", identity_file=str(key), source="x")


def test_nothing_written_when_the_inventory_would_not_load(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="deploy_to"):
        init.write(
            [init.Target("web1", "10.0.0.1")],
            {"web1": [f"10.0.0.1 {ED25519}"]},
            str(tmp_path / "deploy.yml"),
            user="deploy",
            deploy_to="relative/path",
            identity_file=__file__,
            source="a host list",
        )
    assert sorted(os.listdir(tmp_path)) == []


def test_inventory_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEPLOYER_INVENTORY", raising=False)
    with pytest.raises(InputError, match="deployer init"):
        find_inventory(folder=str(tmp_path))
    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "prod.example.yml").write_text("")
    (tmp_path / "inventories" / "prod.yml").write_text("")
    assert find_inventory(folder=str(tmp_path)) == str(tmp_path / "inventories" / "prod.yml")
    (tmp_path / "inventories" / "staging.yml").write_text("")
    with pytest.raises(InputError, match=r"several inventories .*prod.yml, inventories/staging.yml"):
        find_inventory(folder=str(tmp_path))
    (tmp_path / "deploy.yml").write_text("")
    assert find_inventory(folder=str(tmp_path)) == str(tmp_path / "deploy.yml")
    assert find_inventory(configured="from-invoke.yml", folder=str(tmp_path)) == "from-invoke.yml"
    monkeypatch.setenv("DEPLOYER_INVENTORY", "from-env.yml")
    assert find_inventory(configured="from-invoke.yml", folder=str(tmp_path)) == "from-env.yml"
    assert find_inventory("given.yml", "from-invoke.yml", str(tmp_path)) == "given.yml"
