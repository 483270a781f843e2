"""A run's private folders on this machine (the artifact's private copy, the checks' SSH config),
removed when the run ends, and those of runs that ended without removing theirs.

A controller killed with SIGKILL (or by a power cut) cannot clean up: its private copy of the
artifact, as large as the artifact, stayed in the temporary folder for good. Each folder now
holds a lock its run keeps for its whole life (`flock` on `.owner`, released by the kernel when
the process goes, whatever ends it, in any PID namespace sharing the folder); the next run that
makes a folder of the same kind removes every folder whose lock it can take.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path

OWNER = ".owner"
UNOWNED_GRACE = 3600  # a folder without its lock file is a run's made an instant ago, or an old version's


class Scratch:
    """`with Scratch("artifact") as folder:` a new private folder (mode 700), removed on exit."""

    def __init__(self, kind: str) -> None:
        self.prefix = f"deployer-{kind}-"
        self.path = ""
        self._owner: int | None = None

    def __enter__(self) -> str:
        sweep(self.prefix)
        self.path = tempfile.mkdtemp(prefix=self.prefix)
        # locked before it has its name: a sweeper never sees an `.owner` it could take
        taking = os.path.join(self.path, OWNER + ".new")
        self._owner = os.open(taking, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._owner, fcntl.LOCK_EX)
        os.rename(taking, os.path.join(self.path, OWNER))
        return self.path

    def __exit__(self, *exc_info: object) -> None:
        if self.path:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = ""
        if self._owner is not None:
            os.close(self._owner)
            self._owner = None


def sweep(prefix: str, folder: str | None = None) -> list[str]:
    """Remove the folders named `prefix*` in the temporary folder whose run has ended; the paths
    removed. A folder another user owns, or one whose lock is held, is left alone."""
    removed = []
    for path in Path(folder or tempfile.gettempdir()).glob(f"{prefix}*"):
        with contextlib.suppress(OSError):
            if path.is_symlink() or not path.is_dir() or path.stat().st_uid != os.geteuid():
                continue
            if _ended(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(str(path))
    return removed


def _ended(path: Path) -> bool:
    try:
        owner = os.open(path / OWNER, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return time.time() - path.stat().st_mtime > UNOWNED_GRACE
    try:
        fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # its run is alive
    finally:
        os.close(owner)  # (releases the lock taken: the folder goes now)
    return True
