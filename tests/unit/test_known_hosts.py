"""known_hosts files as OpenSSH writes them: hashed names (ssh-keygen -H), markers, comments,
several names per line, [host]:port and IPv6. None of them may crash the tool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import paramiko
import pytest

from deployer.known_hosts import load_known_hosts, parse_known_hosts


def new_key(folder: Path, name: str) -> str:
    path = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return (folder / f"{name}.pub").read_text().split()[0:2]


@pytest.fixture
def keys(tmp_path):
    return {name: " ".join(new_key(tmp_path, name)) for name in ("web1", "web2", "web3", "old", "ca")}


def public(text: str) -> paramiko.PKey:
    key_type, data = text.split()
    return paramiko.PKey.from_type_string(key_type, __import__("base64").b64decode(data))


def test_a_file_hashed_by_ssh_keygen_with_markers_and_comments(tmp_path, keys):
    path = tmp_path / "known_hosts"
    path.write_text(
        "# fleet keys\n"
        "\n"
        f"web1.example.com,10.0.0.11 {keys['web1']}\n"
        f"[10.0.0.12]:2222 {keys['web2']} comment text\n"
        f"[::1]:2200   {keys['web3']}\n"
    )
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(path)], check=True, capture_output=True)
    hashed = path.read_text()
    assert "web1.example.com" not in hashed and "|1|" in hashed  # really hashed by OpenSSH
    path.write_text(
        hashed
        + f"@cert-authority *.example.com {keys['ca']}\n"
        + f"@revoked * {keys['old']}\n"
        + "this line is not a key\n"
        + "@future-marker host ssh-ed25519 AAAA\n"
    )
    known = load_known_hosts(str(path))
    assert set(known.trusted("web1.example.com")) == {"ssh-ed25519"}
    assert known.trusted("10.0.0.11")["ssh-ed25519"] == public(keys["web1"])
    assert known.trusted("[10.0.0.12]:2222")["ssh-ed25519"] == public(keys["web2"])
    assert known.trusted("[::1]:2200")["ssh-ed25519"] == public(keys["web3"])
    assert known.trusted("10.0.0.12") == {}  # a port is part of the name
    assert known.is_revoked(public(keys["old"])) and not known.is_revoked(public(keys["web1"]))
    warnings = "\n".join(known.warnings)
    assert "@cert-authority line skipped" in warnings
    assert f"{path}:" in warnings and "not a known_hosts line" in warnings and "unknown marker" in warnings


def test_a_revoked_key_is_never_trusted_even_when_also_listed(keys):
    known = parse_known_hosts(f"web1 {keys['web1']}\n@revoked web1 {keys['web1']}\n")
    assert known.trusted("web1") == {}


@pytest.mark.parametrize(
    "line",
    ["@cert-authority", "@revoked", "web1", "web1 ssh-ed25519", "web1 ssh-ed25519 !!!notbase64", "| |", "@ @ @"],
)
def test_broken_lines_are_skipped_with_a_warning(line):
    known = parse_known_hosts(line + "\n", "kh")
    assert known.warnings and known.warnings[0].startswith("kh:1:")


def test_a_missing_file_trusts_nobody(tmp_path):
    assert load_known_hosts(str(tmp_path / "none")).trusted("web1") == {}
