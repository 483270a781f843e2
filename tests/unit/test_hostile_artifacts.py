"""What a host checks itself in an artifact the controller never saw (a pull deploy's URL): the
scripts run locally (no SSH, as root, like a root deploy user) on archives made by hand."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from deployer.protocol import parse_output
from deployer.scripts import command_line

LIB = Path(__file__).resolve().parents[2] / "deployer" / "remote" / "lib.sh"


def archive(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return raw.getvalue()


def member(
    name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, uid: int = 0, link: str = ""
) -> tarfile.TarInfo:  # noqa: E501
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.linkname = kind, mode, uid, uid, link
    return info


def stage(deploy_to: Path, data: bytes, **options: str):
    command = command_line(
        "stage", str(deploy_to), release="r1", digest=hashlib.sha256(data).hexdigest(), source="upload", **options
    )
    done = subprocess.run(["sh", "-c", command], input=data, capture_output=True, timeout=60)
    return done.returncode, parse_output(done.stdout.decode(), done.stderr.decode())


@pytest.fixture
def deploy_to(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.fail("these tests extract as root, as a root deploy user does")
    return tmp_path / "app"


def test_a_release_never_keeps_the_archives_owners_or_set_id_bits(deploy_to):
    data = archive(
        (member("VERSION"), b"v1\n"),
        (member("bin/tool", mode=0o4755, uid=1001), b"#!/bin/sh\n"),
        (member("bin/group-tool", mode=0o2755, uid=1001), b"#!/bin/sh\n"),
    )
    code, out = stage(deploy_to, data)
    assert code == 0, out.error_message()
    for name in ("tool", "group-tool"):
        status = (deploy_to / "releases" / "r1" / "bin" / name).stat()
        assert status.st_uid == os.getuid() and status.st_mode & 0o7777 == 0o755
    assert any("set-user-id and set-group-id bits were removed" in w[0] for w in out.all("warning"))


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.FIFOTYPE], ids=["device", "fifo"])
def test_device_files_and_fifos_are_refused(deploy_to, kind):
    code, out = stage(deploy_to, archive((member("VERSION"), b"v1\n"), (member("dev/odd", kind=kind), b"")))
    assert code == 20 and "device file, FIFO or socket (dev/odd)" in out.error_message()
    assert not (deploy_to / "releases" / "r1").exists()
    assert not list((deploy_to / ".deployer" / "staging").iterdir())


@pytest.mark.parametrize("name", ["previousVersion", "previousVersion.tmp.4242"])
def test_the_deployers_own_file_names_cannot_be_shipped(deploy_to, tmp_path, name):
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    shipped = member(name, kind=tarfile.SYMTYPE, link=str(victim))
    code, out = stage(deploy_to, archive((member("VERSION"), b"v1\n"), (shipped, b"")))
    assert code == 20 and "previousVersion is written by the deployer" in out.error_message()
    assert victim.read_text() == "untouched\n"


def test_a_shared_path_under_a_shipped_link_is_refused_and_nothing_outside_is_touched(deploy_to, tmp_path):
    outside = tmp_path / "outside"
    (outside / "logs").mkdir(parents=True)
    (outside / "logs" / "keep.txt").write_text("keep\n")
    storage = member("storage", kind=tarfile.SYMTYPE, link=str(outside))
    code, out = stage(deploy_to, archive((member("VERSION"), b"v1\n"), (storage, b"")), shared="storage/logs/")
    assert code == 20 and "storage is a link in the release" in out.error_message()
    assert (outside / "logs" / "keep.txt").read_text() == "keep\n"
    assert not (deploy_to / "shared" / "storage").exists()


def test_the_tools_own_writes_never_follow_a_link_at_the_temp_name(tmp_path):
    """write_file writes TARGET.tmp.PID then renames it: a link planted at that name (a file the
    release shipped) must not redirect the write."""
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    script = f'. "{LIB}"; ln -s "$1" "target.tmp.$$" && write_file target new && cat target'
    done = subprocess.run(["sh", "-c", script, "sh", str(victim)], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "new\n", done.stderr
    assert victim.read_text() == "untouched\n"
    assert not (tmp_path / "target").is_symlink()
