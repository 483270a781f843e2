"""The installed `deployer` command offers the same tasks as `inv`, with --version."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from deployer import __version__
from tests.conftest import REPO


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60)


def task_names(listing: str) -> list[str]:
    return sorted(line.split()[0] for line in listing.splitlines() if line.startswith("  ") and line.split())


def test_version_and_same_tasks_as_inv():
    deployer = os.path.join(os.path.dirname(sys.executable), "deployer")
    command = [deployer] if os.path.exists(deployer) else [sys.executable, "-m", "deployer.console"]
    version = run(*command, "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"deployer {__version__}"
    ours = run(*command, "--list")
    theirs = run(sys.executable, "-m", "invoke", "--list")
    assert ours.returncode == 0 and theirs.returncode == 0
    assert task_names(ours.stdout) == task_names(theirs.stdout)
    assert {"deploy", "rollback", "rollback-drill", "status", "unlock"} <= set(task_names(ours.stdout))


def test_bad_input_through_the_installed_command_is_one_line_not_a_traceback(tmp_path):
    result = run(sys.executable, "-m", "deployer.console", "status", "--inventory", str(tmp_path / "missing.yml"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_listing_the_tasks_imports_no_ssh_stack():
    """`inv --list` and `--help` load only invoke and the task definitions (start-up stays small)."""
    probe = (
        "import sys, tasks; heavy = [m for m in ('paramiko', 'fabric', 'cryptography', 'rich') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    done = run(sys.executable, "-c", probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_every_fleet_task_takes_the_shared_options_and_changing_tasks_the_lock_ones():
    from invoke import Collection  # noqa: PLC0415

    import tasks  # noqa: PLC0415

    collection = Collection.from_module(tasks)
    shared = {"inventory", "verbose", "hosts", "group", "json", "parallel", "accept_new_host_keys"}
    fleet_tasks = ["deploy", "rollback", "rollback-drill", "status", "history", "releases", "lock-status"]
    fleet_tasks += ["unlock", "unpin", "prune", "verify"]
    for name in fleet_tasks:
        arguments = {argument.name for argument in collection[name].get_arguments()}
        assert shared <= arguments, name
        changes_the_fleet = name in ("deploy", "rollback", "rollback-drill", "unpin", "prune")
        assert ({"lock_wait", "message"} <= arguments) == changes_the_fleet, name


def test_every_task_but_the_demo_offers_json():
    from invoke import Collection  # noqa: PLC0415

    import tasks  # noqa: PLC0415

    collection = Collection.from_module(tasks)
    for name in collection.task_names:
        arguments = {argument.name for argument in collection[name].get_arguments()}
        assert ("json" in arguments) == (name != "demo"), name


def test_json_with_bad_input_prints_one_json_document_with_the_error(tmp_path):
    for args in (
        ["status", "--inventory", str(tmp_path / "missing.yml")],
        ["deploy", "--inventory", str(tmp_path / "missing.yml"), "--lock-wait", "forever"],
        ["rollback", "--to", "../etc"],
    ):
        result = run(sys.executable, "-m", "invoke", *args, "--json")
        document = json.loads(result.stdout)  # exactly one JSON document, nothing else on stdout
        assert document["ok"] is False and document["exit_code"] == 2 == result.returncode, args
        assert document["error"] and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_any_unexpected_exception_ends_as_one_line_and_the_run_log(tmp_path, monkeypatch, capsys):
    """The last boundary (cli.guarded): whatever escapes is one line naming it and the run log."""
    from invoke.exceptions import Exit  # noqa: PLC0415

    from deployer import cli  # noqa: PLC0415

    monkeypatch.setenv("DEPLOYER_LOG_DIR", str(tmp_path))

    def broken() -> int:
        raise OSError(5, "Input/output error")

    for as_json in (False, True):
        with pytest.raises(Exit) as ended:
            cli.guarded(broken, "deploy", as_json=as_json)
        assert ended.value.code == 1
        out, err = capsys.readouterr()
        (line,) = err.strip().splitlines()
        assert line.startswith("error: unexpected error: OSError: [Errno 5] Input/output error; details in ")
        log = line.rsplit("details in ", 1)[1]
        assert "Traceback" in open(log).read()  # the traceback is in the run log, not on the terminal
        assert (json.loads(out)["run_log"] == log) if as_json else out == ""


def test_build_sample_from_a_broken_installation_is_one_clear_line(tmp_path, monkeypatch):
    from deployer import cli  # noqa: PLC0415
    from deployer.errors import InputError  # noqa: PLC0415

    monkeypatch.setattr(cli, "SAMPLE_APP", tmp_path / "sample-app")
    with pytest.raises(InputError, match="sample app is missing from this installation"):
        cli.build_sample("v1", str(tmp_path / "out.tar.gz"))
