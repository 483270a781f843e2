"""The Vagrant fleet's files and the inventory made from `vagrant ssh-config`."""

from __future__ import annotations

import subprocess

import pytest

from deployer.errors import InputError
from deployer.playground.vagrant import SshHost, check_against_console, key_fingerprint, parse_ssh_config
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


def test_vagrantfile_is_valid_ruby_and_its_scripts_are_shellcheck_clean():
    ruby = subprocess.run(["ruby", "-c", str(REPO / "vagrant" / "Vagrantfile")], capture_output=True, text=True)
    assert ruby.returncode == 0 and "Syntax OK" in ruby.stdout, ruby.stderr
    for script in ("provision.sh", "box/build.sh"):
        check = subprocess.run(["shellcheck", "-s", "sh", str(REPO / "vagrant" / script)], capture_output=True)
        assert check.returncode == 0, check.stdout.decode()


def test_scanned_keys_are_checked_against_the_fingerprints_a_vm_printed_on_its_console(tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")], check=True)
    public = (tmp_path / "key.pub").read_text().split()
    line = f"10.0.0.5 {public[0]} {public[1]}"
    printed = subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / "key.pub")], capture_output=True, text=True)
    assert key_fingerprint(line) == printed.stdout.split()[1]  # the same text OpenSSH shows
    host = SshHost("web1", "10.0.0.5", 22, "k")
    console = tmp_path / "web1.log"
    console.write_text(f"[  OK  ] noise\r\nhost-key-fingerprint: {printed.stdout.strip()}\r\n")
    assert check_against_console(host, [line], str(console)) is True
    assert check_against_console(host, [line], str(tmp_path / "absent.log")) is False  # no console: first use
    other = tmp_path / "other.log"
    other.write_text("host-key-fingerprint: 256 SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA x (ED25519)\n")
    with pytest.raises(InputError, match="did not print on its console"):
        check_against_console(host, [line], str(other))
