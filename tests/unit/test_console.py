"""The installed `deployer` command offers the same tasks as `inv`, with --version."""

from __future__ import annotations

import os
import subprocess
import sys

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
