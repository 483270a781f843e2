"""The host's copies of the scripts (deployer.scripts): a session sends a few hundred bytes when the
copy is whole, never runs a torn or edited copy, and leaves nothing where nothing was deployed.

Each program runs locally under dash, BusyBox ash and bash --posix, as sshd would run it."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from deployer.protocol import parse_output
from deployer.scripts import (
    EXIT_KEPT_MISSING,
    SCRIPT_NAMES,
    asking_program,
    exec_request,
    keeping_program,
    kept_name,
    kept_program,
    kept_text,
    posix_cksum,
    whole_copies,
)


def session(program: str, deploy_to: Path, stdin: bytes = b"", name: str = "gather", env: dict[str, str] | None = None):
    request = exec_request(name, program, [str(deploy_to)])
    done = subprocess.run(["/bin/sh", "-c", request], input=stdin, capture_output=True, timeout=60, env=env)
    return done.returncode, parse_output(done.stdout.decode(), done.stderr.decode()), done.stdout.decode()


def asked(stdout: str) -> bool:
    return "@progress\tneed-script\n" in stdout


def copy_of(deploy_to: Path, name: str) -> Path:
    return deploy_to / ".deployer" / "scripts" / kept_name(name)


@pytest.mark.parametrize("size", [0, 1, 255, 256, 65535, 65536, 70000])
def test_posix_cksum_is_what_the_hosts_cksum_prints(size):
    data = os.urandom(size)
    assert posix_cksum(data) == subprocess.run(["cksum"], input=data, capture_output=True).stdout.decode().strip()


@pytest.mark.usefixtures("remote_shell")
def test_a_host_never_deployed_is_read_and_keeps_nothing(tmp_path):
    deploy_to = tmp_path / "app"
    code, output, stdout = session(asking_program("gather"), deploy_to, kept_text("gather").encode())
    assert code == 0 and asked(stdout)
    assert output.first("deploy_to") == ["missing"]
    assert not deploy_to.exists()  # a read left no trace


@pytest.mark.usefixtures("remote_shell")
def test_gather_keeps_its_copy_then_runs_it_without_asking(tmp_path):
    deploy_to = tmp_path / "app"
    (deploy_to / ".deployer").mkdir(parents=True)
    code, output, stdout = session(asking_program("gather"), deploy_to, kept_text("gather").encode())
    assert code == 0 and asked(stdout)
    assert copy_of(deploy_to, "gather").read_text() == kept_text("gather")
    assert output.first("kept") == [kept_name("gather")]

    code, output, stdout = session(asking_program("gather"), deploy_to)  # nothing offered on stdin
    assert code == 0 and not asked(stdout)
    assert output.first("deploy_to") == ["present", str(deploy_to)]
    assert whole_copies(output.all("kept")) == {kept_name("gather")}  # with its sum, checked


@pytest.mark.usefixtures("remote_shell")
@pytest.mark.parametrize("damage", ["torn", "edited", "emptied"])
def test_a_damaged_copy_never_runs_and_is_replaced(tmp_path, damage):
    deploy_to = tmp_path / "app"
    (deploy_to / ".deployer").mkdir(parents=True)
    session(asking_program("gather"), deploy_to, kept_text("gather").encode())
    copy = copy_of(deploy_to, "gather")
    marker = tmp_path / "ran-the-edited-copy"
    text = kept_text("gather")
    copy.write_text({"torn": text[: len(text) // 2], "edited": f"touch {marker}\n{text}", "emptied": ""}[damage])
    code, output, stdout = session(asking_program("gather"), deploy_to, kept_text("gather").encode())
    assert code == 0 and asked(stdout)
    assert not marker.exists()
    assert copy.read_text() == kept_text("gather")
    assert output.first("deploy_to") == ["present", str(deploy_to)]


@pytest.mark.usefixtures("remote_shell")
def test_a_text_cut_short_in_transit_is_not_run(tmp_path):
    deploy_to = tmp_path / "app"
    (deploy_to / ".deployer").mkdir(parents=True)
    marker = tmp_path / "ran"
    cut = f"touch {marker}\n".encode() + kept_text("gather").encode()[:-100]
    code, output, _ = session(asking_program("gather"), deploy_to, cut)
    assert code == EXIT_KEPT_MISSING
    assert "arrived incomplete" in output.error_message()
    assert not marker.exists()
    kept = deploy_to / ".deployer" / "scripts"
    assert not kept.exists() or not any(kept.iterdir())


@pytest.mark.usefixtures("remote_shell")
@pytest.mark.parametrize("name", [name for name in SCRIPT_NAMES if name != "gather"])
def test_a_session_sent_whole_keeps_a_copy_the_next_one_runs(tmp_path, name):
    deploy_to = tmp_path / "app"
    (deploy_to / ".deployer").mkdir(parents=True)
    # Run with no option: each script stops at its usage check, having read its copy's code.
    first_code, first, _ = session(keeping_program(name), deploy_to, name=name)
    assert copy_of(deploy_to, name).read_text() == kept_text(name)
    assert first.first("kept") == [kept_name(name)]
    code, output, _ = session(kept_program(name), deploy_to, name=name)
    assert (code, output.all("error")) == (first_code, first.all("error"))
    assert len(exec_request(name, kept_program(name), [str(deploy_to)])) < 1024  # instead of 10-28 KB


@pytest.mark.usefixtures("remote_shell")
def test_a_copy_that_vanished_stops_the_session_before_anything_changes(tmp_path):
    deploy_to = tmp_path / "app"
    (deploy_to / ".deployer").mkdir(parents=True)
    before = sorted(str(path) for path in deploy_to.rglob("*"))
    code, output, _ = session(kept_program("finish"), deploy_to, name="finish")
    assert code == EXIT_KEPT_MISSING
    assert "vanished during the run; nothing was changed" in output.error_message()
    assert sorted(str(path) for path in deploy_to.rglob("*")) == before


@pytest.mark.usefixtures("remote_shell")
def test_old_versions_go_when_a_new_one_is_kept_and_others_stay(tmp_path):
    deploy_to = tmp_path / "app"
    kept = deploy_to / ".deployer" / "scripts"
    kept.mkdir(parents=True)
    old, recent, other = kept / "gather-00000000000000aa.sh", kept / "gather-00000000000000bb.sh", kept / "stage-1.sh"
    for path in (old, recent, other):
        path.write_text("exit 99\n")
    month_ago = os.stat(old).st_mtime - 31 * 86400
    os.utime(old, (month_ago, month_ago))
    os.utime(other, (month_ago, month_ago))
    session(asking_program("gather"), deploy_to, kept_text("gather").encode())
    assert sorted(path.name for path in kept.iterdir()) == sorted([recent.name, other.name, kept_name("gather")])


def only_tools(tmp_path: Path, *without: str) -> dict[str, str]:
    """An environment whose PATH has what gather uses, less `without`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("cat", "rm", "mkdir", "mv", "find", "uname", "df", "awk", "tail", "cut", "cksum", "sha256sum"):
        found = shutil.which(tool)
        if found and tool not in without:
            (bin_dir / tool).symlink_to(found)
    return {"PATH": str(bin_dir), "HOME": str(tmp_path)}


def test_with_sha256sum_and_no_cksum_copies_are_checked_by_sha256(tmp_path, remote_shell_honouring_path):
    """Debian's BusyBox has no cksum applet: its sha256sum checks the copies."""
    deploy_to = tmp_path / "app"
    (deploy_to / ".deployer").mkdir(parents=True)
    env = only_tools(tmp_path, "cksum")
    code, output, stdout = session(asking_program("gather"), deploy_to, kept_text("gather").encode(), env=env)
    assert code == 0 and asked(stdout) and output.first("kept") == [kept_name("gather")]
    copy_of(deploy_to, "gather").write_text(kept_text("gather").replace("emit hostname", "emit hostnam"))
    code, output, stdout = session(asking_program("gather"), deploy_to, kept_text("gather").encode(), env=env)
    assert code == 0 and asked(stdout)  # the edited copy was refused, and replaced
    assert copy_of(deploy_to, "gather").read_text() == kept_text("gather")
    code, output, stdout = session(asking_program("gather"), deploy_to, env=env)
    assert code == 0 and not asked(stdout) and output.has("hostname")


def test_with_no_way_to_check_a_copy_the_script_runs_and_nothing_is_kept(tmp_path, remote_shell_honouring_path):
    deploy_to = tmp_path / "app"
    (deploy_to / ".deployer").mkdir(parents=True)
    env = only_tools(tmp_path, "cksum", "sha256sum")
    code, output, stdout = session(asking_program("gather"), deploy_to, kept_text("gather").encode(), env=env)
    assert asked(stdout) and output.first("deploy_to") == ["present", str(deploy_to)]
    assert not (deploy_to / ".deployer" / "scripts").exists()
    session(keeping_program("finish"), deploy_to, name="finish", env=env)
    assert not (deploy_to / ".deployer" / "scripts").exists()  # so no later session counts on a copy


def test_only_copies_whose_sum_is_the_scripts_own_count():
    text = kept_text("stage").encode()
    cksum, sha = posix_cksum(text), hashlib.sha256(text).hexdigest()
    records = [
        [kept_name("stage"), cksum],
        [kept_name("switch"), sha],  # another script's sum: an edited copy
        [kept_name("finish"), hashlib.sha256(kept_text("finish").encode()).hexdigest()],
        [kept_name("run")],  # just written by the session itself
        ["gather-0000000000000000.sh", cksum],  # another version's copy
        ["notes.sh"],
    ]
    assert whole_copies(records) == {kept_name("stage"), kept_name("finish"), kept_name("run")}
    assert sha != cksum


def test_gather_sums_the_kept_copies_once_to_check_its_own_and_report_them(tmp_path, remote_shell_honouring_path):
    """One `cksum` for both: the session's start checks gather's copy by the sums gather then
    reports (before: one for the copy on stdin, one for all copies)."""
    deploy_to = tmp_path / "app"
    (deploy_to / ".deployer").mkdir(parents=True)
    env = only_tools(tmp_path)
    calls = tmp_path / "cksum-calls"
    real = Path(env["PATH"], "cksum").resolve()
    Path(env["PATH"], "cksum").unlink()
    recording = Path(env["PATH"], "cksum")
    recording.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {real} "$@"\n')
    recording.chmod(0o755)
    session(asking_program("gather"), deploy_to, kept_text("gather").encode(), env=env)
    session(keeping_program("finish"), deploy_to, name="finish", env=env)
    calls.write_text("")
    code, output, stdout = session(asking_program("gather"), deploy_to, env=env)
    assert code == 0 and not asked(stdout) and output.has("hostname")
    assert calls.read_text().splitlines() == [f"./{kept_name('finish')} ./{kept_name('gather')}"]
    assert whole_copies(output.all("kept")) == {kept_name("gather"), kept_name("finish")}
    assert {file for file, *_ in output.all("kept")} == {kept_name("gather"), kept_name("finish")}
