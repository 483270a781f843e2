"""A run's private folders: a run killed with SIGKILL leaves its folder (the artifact's private copy,
as large as the artifact), and the next run removes it; a live run's folder is never touched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from deployer.release import PreparedArtifact, pack_directory
from deployer.scratch import Scratch, sweep

HOLDER = """
import sys, time
from deployer.scratch import Scratch
with Scratch(sys.argv[1]) as folder:
    open(folder + "/payload", "wb").write(b"x" * 4096)
    print(folder, flush=True)
    time.sleep(600)
"""


def holder(kind: str, tmp: Path) -> tuple[subprocess.Popen[str], Path]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, kind], stdout=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp)}
    )
    assert process.stdout is not None
    return process, Path(process.stdout.readline().strip())


def test_a_killed_runs_folder_is_removed_by_the_next_run_and_a_live_ones_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    killed, left = holder("artifact", tmp_path)
    alive, kept = holder("artifact", tmp_path)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert (left / "payload").exists()  # what SIGKILL leaves behind
        with Scratch("artifact") as mine:
            assert not left.exists()
            assert (kept / "payload").exists()  # its run still holds it
            assert Path(mine).is_dir() and Path(mine).parent == tmp_path
        assert not Path(mine).exists()
        assert kept.exists()
    finally:
        alive.kill()
        alive.wait()
    assert sweep("deployer-artifact-") == [str(kept)]


def test_only_folders_of_its_kind_and_of_this_user_are_swept(tmp_path):
    other_kind = tmp_path / "deployer-verify-abc"
    other_kind.mkdir()
    (other_kind / ".owner").touch()
    old_version = tmp_path / "deployer-artifact-old"  # no lock file: left by a version without one, or just made
    old_version.mkdir()
    assert sweep("deployer-artifact-", str(tmp_path)) == []
    os.utime(old_version, (0, 0))
    assert sweep("deployer-artifact-", str(tmp_path)) == [str(old_version)]
    assert other_kind.exists()
    foreign = tmp_path / "deployer-verify-foreign"
    foreign.mkdir()
    (foreign / ".owner").touch()
    os.chown(foreign, 65534, 65534)
    assert sweep("deployer-verify-", str(tmp_path)) == [str(other_kind)]
    assert foreign.exists()


def test_the_artifacts_private_copy_lives_exactly_as_long_as_the_deploy(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "VERSION").write_text("1\n")
    pack_directory(str(tmp_path / "app"), str(tmp_path / "app.tar.gz"))
    with PreparedArtifact(str(tmp_path / "app.tar.gz")) as artifact:
        copy = Path(artifact.path)
        assert (
            copy.parent.name.startswith("deployer-artifact-")
            and copy.read_bytes() == (tmp_path / "app.tar.gz").read_bytes()
        )
    assert not copy.parent.exists()
