"""The installed `deployer` (a wheel in a fresh virtualenv, run from a folder outside the checkout), as a
new user meets it: help on every command, argument errors, a near miss, and hints that name commands
which work where they were printed. Each host's state is read over OpenSSH, not from the tool."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from deployer.commands import COMMANDS
from deployer.playground.localfleet import LocalFleet
from tests.conftest import HostView, fleet_fingerprints

pytestmark = pytest.mark.fleet


def installed(venv: Path, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DEPLOYER_")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    env["DEPLOYER_LOG_DIR"] = str(folder / ".runs")
    return subprocess.run(list(args), cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def test_help_on_every_command_of_the_installed_program(venv: Path, tmp_path: Path) -> None:
    top = installed(venv, tmp_path, "deployer", "--help")
    assert top.returncode == 0 and "Ship and undo:" in top.stdout
    for name in COMMANDS:
        for spelled in ("--help", "-h"):
            shown = installed(venv, tmp_path, "deployer", name, spelled)
            assert shown.returncode == 0, (name, shown.stderr)
            assert shown.stdout.startswith(f"deployer {name}: ") and "Examples:" in shown.stdout, name


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["deploy", "--parallel", "abc"], "deployer deploy: --parallel expects a whole number"),
        (["history", "--limit", "ten"], "deployer history: --limit expects a whole number"),
        (["deploy", "--artfact", "x"], "unknown flag --artfact; did you mean --artifact?"),
        (["rollbak"], "did you mean `deployer rollback`?"),
        (["report", "--html", "x"], "unknown flag --html"),
    ],
)
def test_argument_errors_of_the_installed_program(venv: Path, tmp_path: Path, args, expected) -> None:
    plain = installed(venv, tmp_path, "deployer", *args)
    assert plain.returncode == 2 and plain.stdout == ""
    (line,) = plain.stderr.splitlines()
    assert line.startswith("error: ") and expected in line and "Traceback" not in plain.stderr
    as_json = installed(venv, tmp_path, "deployer", *args, "--json")
    document = json.loads(as_json.stdout)
    assert as_json.returncode == 2 == document["exit_code"] and expected in document["error"]
    assert not list((tmp_path / ".runs").glob("*.log"))  # a mistyped command line is not a run


def hinted(text: str) -> list[list[str]]:
    """Every command a hint names (`deployer ...` in backquotes)."""
    return [shlex.split(found) for found in re.findall(r"`(deployer [^`]+)`", text)]


def test_every_hint_names_a_command_that_works_where_it_was_printed(
    venv: Path, tmp_path: Path, local_fleet: LocalFleet, deploy_to: str
) -> None:
    project = tmp_path / "shop"
    project.mkdir()
    (project / "fingerprints.txt").write_text(fleet_fingerprints(local_fleet))
    hosts = ",".join(f"{host.name}={host.address}:{host.port}" for host in local_fleet.hosts())
    written = installed(
        venv, project, "deployer", "init", "--hosts", hosts, "--identity-file", local_fleet.identity_file,
        "--deploy-to", deploy_to, "--accept-fingerprints", "fingerprints.txt",
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    seen = written.stdout
    for version in ("v1", "v2"):
        built = installed(venv, project, "deployer", "build-sample", "--version", version, "-o", f"{version}.tar.gz")
        assert built.returncode == 0
        done = installed(venv, project, "deployer", "deploy", "-a", f"{version}.tar.gz", "--version", version)
        assert done.returncode == 0, done.stderr
    rolled = installed(venv, project, "deployer", "rollback", "-m", "v2 is broken")
    assert rolled.returncode == 0
    refused = installed(venv, project, "deployer", "deploy", "-a", "v2.tar.gz")
    assert refused.returncode == 3
    seen += rolled.stdout + rolled.stderr + refused.stdout + refused.stderr
    commands = hinted(seen)
    assert ["deployer", "unpin"] in commands and ["deployer", "deploy"] in commands, seen
    for command in commands:  # each one exists here, as printed: the program and its flags
        assert command[0] == "deployer" and command[1] in COMMANDS, command
        assert installed(venv, project, *command, "--help").returncode == 0, command
    assert "inv " not in seen  # nothing points at a tasks.py this folder does not have
    unpinned = installed(venv, project, "deployer", "unpin")  # as the hint says
    assert unpinned.returncode == 0, unpinned.stderr
    for host in local_fleet.hosts():
        assert HostView(local_fleet, host.name).host.run("test -e %s", f"{deploy_to}/.deployer/pin").rc == 1
    again = installed(venv, project, "deployer", "deploy", "-a", "v2.tar.gz", "--version", "v2")
    assert again.returncode == 0, again.stderr
