"""Fixtures shared by the unit tests of the remote scripts."""

from __future__ import annotations

import pytest

from deployer import scripts

# The POSIX shells a host may have as /bin/sh (Debian's dash, Alpine's BusyBox ash, bash as sh).
REMOTE_SHELLS = {"dash": "/bin/dash", "busybox-ash": "/bin/busybox ash", "bash-posix": "/bin/bash --posix"}


@pytest.fixture(params=sorted(REMOTE_SHELLS))
def remote_shell(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the remote scripts under each shell in turn."""
    monkeypatch.setattr(scripts, "REMOTE_SHELL", REMOTE_SHELLS[request.param])
    return str(request.param)


@pytest.fixture(params=["dash", "bash-posix"])
def remote_shell_honouring_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The shells that run a tool found first on PATH (BusyBox ash runs its own applets first, so
    a test that puts a recording `sync` on PATH cannot watch it)."""
    monkeypatch.setattr(scripts, "REMOTE_SHELL", REMOTE_SHELLS[request.param])
    return str(request.param)
