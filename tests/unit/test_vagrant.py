"""The Vagrant fleet's files and the inventory made from `vagrant ssh-config`."""

from __future__ import annotations

import subprocess

import pytest

from deployer.errors import InputError
from deployer.vagrant import parse_ssh_config
from tests.conftest import REPO

SSH_CONFIG = """\
Host web1
  HostName 127.0.0.1
  User vagrant
  Port 2222
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  PasswordAuthentication no
  IdentityFile /home/me/.vagrant.d/insecure_private_key
  IdentitiesOnly yes
  LogLevel FATAL

Host web2
  HostName 127.0.0.1
  Port 2200
  IdentityFile /home/me/.vagrant.d/insecure_private_key
  IdentityFile /ignored/second

Host web3
  HostName 192.168.56.13
  IdentityFile "/home/me/.vagrant.d/insecure_private_key"
"""


def test_vagrant_ssh_config_is_read_in_order():
    hosts = parse_ssh_config(SSH_CONFIG)
    assert [(h.alias, h.hostname, h.port) for h in hosts] == [
        ("web1", "127.0.0.1", 2222),
        ("web2", "127.0.0.1", 2200),
        ("web3", "192.168.56.13", 22),
    ]
    assert {h.identity_file for h in hosts} == {"/home/me/.vagrant.d/insecure_private_key"}


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "no Host entries"),
        ("Host web1\n  Port 22\n", "no HostName or IdentityFile"),
        ("Host web1\n  HostName a\n  IdentityFile k\n  Port x\n", "port 'x'"),
        ("Host 'a b'\n  HostName a\n  IdentityFile k\n", "not a usable host name"),
        ("Host a\n HostName a\n IdentityFile k1\nHost b\n HostName b\n IdentityFile k2\n", "different keys"),
    ],
)
def test_bad_ssh_config_is_a_clear_error(text, words):
    with pytest.raises(InputError, match=words):
        parse_ssh_config(text)


def test_vagrantfile_is_valid_ruby_and_provision_script_is_shellcheck_clean():
    ruby = subprocess.run(["ruby", "-c", str(REPO / "vagrant" / "Vagrantfile")], capture_output=True, text=True)
    assert ruby.returncode == 0 and "Syntax OK" in ruby.stdout, ruby.stderr
    check = subprocess.run(["shellcheck", "-s", "sh", str(REPO / "vagrant" / "provision.sh")], capture_output=True)
    assert check.returncode == 0, check.stdout.decode()
