"""The local fleets' login: one non-root user, `deploy`, and its authorized_keys, shared by every
fleet on this machine (a suite's workers, the soak, a benchmark, a demo).

Changes to the account and its keys take turns under one lock file, and the keys file is only ever
replaced whole: a fleet or a test adds or removes its own key and leaves every other key as it is.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from deployer.errors import FleetError

DEPLOY_USER = "deploy"
USERS_LOCK = "/run/deployer-localfleet-user.lock"


@contextlib.contextmanager
def users_lock() -> Iterator[None]:
    """Fleets and tests on this machine take turns with the deploy user's account and its keys."""
    with open(USERS_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _edit_authorized_keys(change: Callable[[list[str]], list[str]]) -> None:
    """Rewrite the deploy user's authorized_keys with change(lines) (its lines, stripped), under the
    lock, atomically.

    Every fleet on this machine (a suite's workers, the soak, a benchmark) logs in through this one
    file, so it is never rewritten from a copy read earlier (that dropped keys added meanwhile and
    locked a running fleet out) and never seen half-written by an sshd reading it: the new text goes
    to a file beside it, renamed over it.
    """
    deploy = pwd.getpwnam(DEPLOY_USER)
    ssh_dir = Path(deploy.pw_dir, ".ssh")
    with users_lock():
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(ssh_dir, deploy.pw_uid, deploy.pw_gid)
        keys = ssh_dir / "authorized_keys"
        present = keys.exists()
        lines = [line.strip() for line in keys.read_text().splitlines()] if present else []
        changed = change(lines)
        if present and changed == lines:
            return
        fresh = ssh_dir / ".authorized_keys.new"
        fresh.write_text("".join(line + "\n" for line in changed))
        os.chown(fresh, deploy.pw_uid, deploy.pw_gid)
        fresh.chmod(0o600)
        os.replace(fresh, keys)


def authorize(public_key: str) -> None:
    """Let `public_key` log in as the deploy user (kept if already there)."""
    key = public_key.strip()
    _edit_authorized_keys(lambda lines: lines if key in lines else [*lines, key])


def revoke(public_key: str) -> None:
    """Remove exactly `public_key` from the deploy user's keys; every other key stays."""
    key = public_key.strip()
    _edit_authorized_keys(lambda lines: [line for line in lines if line != key])


def ensure_deploy_user() -> None:
    """Create the deploy user when missing and make sure sshd does not see it as locked."""
    # Fleets started at once (a suite's workers) take turns: useradd and usermod refuse to run while
    # another holds /etc/passwd's lock.
    with users_lock():
        try:
            pwd.getpwnam(DEPLOY_USER)
        except KeyError:
            run_command("useradd", "--create-home", "--shell", "/bin/sh", DEPLOY_USER)
        # A user without a password is "locked" ('!') for sshd; '*' means no password but not locked.
        # A password set meanwhile (the sudo tests, while another fleet starts) is left as it is.
        shadow = subprocess.run(["getent", "shadow", DEPLOY_USER], capture_output=True, text=True, check=False)
        password = shadow.stdout.split(":")[1] if shadow.stdout.count(":") > 1 else ""
        if password == "" or password.startswith("!"):
            run_command("usermod", "-p", "*", DEPLOY_USER)


def run_command(*command: str) -> subprocess.CompletedProcess[str]:
    """Run a command that must succeed; its failure is a FleetError with what it printed."""
    try:
        return subprocess.run(command, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        raise FleetError(f"{' '.join(command)} failed: {exc.stderr.strip() or exc.stdout.strip()}") from None
    except FileNotFoundError:
        raise FleetError(f"{command[0]} is not installed") from None
