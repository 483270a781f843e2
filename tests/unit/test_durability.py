"""Durable before visible, and damaged data never trusted (the scripts run locally, no SSH).

A power cut is proven on real VMs (issue 13's VM suite); here the scripts' order of operations is
checked with a `sync` that records, at each call, what the folder looked like, and state files are
truncated the way a power cut leaves them (empty, or without their final newline)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from deployer import plan as planning
from deployer.protocol import parse_output
from deployer.release import PreparedArtifact
from deployer.scripts import command_line
from deployer.state import STATUS_DAMAGED, parse_state

RECORDING_SYNC = """#!/bin/sh
# Record each call: its arguments, whether the release folder exists, where `current` points.
{
    printf 'args=%s' "$*"
    printf ' release=%s' "$([ -d "$DEPLOY_TO/releases/r1" ] && echo yes || echo no)"
    printf ' current=%s' "$(readlink "$DEPLOY_TO/current" 2>/dev/null)"
    printf ' meta=%s\\n' "$(cut -d' ' -f1 "$DEPLOY_TO/.deployer/meta/r1" 2>/dev/null)"
} >> "$SYNC_LOG"
exec REAL_SYNC "$@"
"""


pytestmark = pytest.mark.usefixtures("remote_shell_honouring_path")


@pytest.fixture
def artifact(tmp_path_factory):
    tree = tmp_path_factory.mktemp("app")
    (tree / "VERSION").write_text("v1\n")
    with PreparedArtifact(str(tree)) as prepared:
        yield prepared, Path(prepared.path).read_bytes()


@pytest.fixture
def recorded(tmp_path):
    """PATH with a `sync` that logs each call; returns (environment, log path)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    fake = folder / "sync"
    fake.write_text(RECORDING_SYNC.replace("REAL_SYNC", shutil.which("sync") or "/bin/sync"))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "sync.log"
    deploy_to = tmp_path / "app"
    env = {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}", "SYNC_LOG": str(log), "DEPLOY_TO": str(deploy_to)}
    return env, log, str(deploy_to)


def run(command: str, env: dict[str, str] | None = None, stdin: bytes = b""):
    done = subprocess.run(["sh", "-c", command], input=stdin, capture_output=True, env=env, timeout=60)
    return done.returncode, parse_output(done.stdout.decode(), done.stderr.decode())


@pytest.mark.parametrize("validate", ["true", None])
def test_a_release_is_on_disk_before_its_status_says_ok(artifact, recorded, validate):
    env, log, deploy_to = recorded
    prepared, data = artifact
    options = {"validate": validate} if validate else {}
    command = command_line("stage", deploy_to, release="r1", digest=prepared.digest, source="upload", **options)
    code, out = run(command, env, data)
    assert code == 0 and out.first("staged") == ["r1", prepared.digest]
    calls = log.read_text().splitlines()
    # The whole release is flushed once it is in releases/, while its status still says "validating"
    # (a later deploy reuses, and a rollback switches to, only "ok" releases)...
    release_flush = [i for i, call in enumerate(calls) if call.startswith(("args=-f releases/r1 ", "args= "))]
    assert release_flush, calls
    assert "release=yes" in calls[release_flush[-1]] and "meta=validating" in calls[release_flush[-1]]
    # ...and only then "ok" is written, through a temp file flushed before the rename, and the
    # rename is flushed before the session ends.
    assert ".deployer/meta/r1.tmp." in calls[-2] and release_flush[-1] < len(calls) - 2
    assert "meta=ok" in calls[-1]
    assert Path(deploy_to, ".deployer", "meta", "r1").read_text().startswith("ok ")


def test_the_switch_is_flushed_after_the_rename_and_before_it_is_reported(artifact, recorded):
    env, log, deploy_to = recorded
    prepared, data = artifact
    run(command_line("stage", deploy_to, release="r1", digest=prepared.digest, source="upload"), env, data)
    log.write_text("")
    code, out = run(command_line("switch", deploy_to, target="r1", expected="", mode="deploy", history="{}"), env)
    assert code == 0 and out.has("switched") and out.has("history_written")
    calls = log.read_text().splitlines()
    flushed_after_rename = [call for call in calls if " current=releases/r1 " in call]
    assert flushed_after_rename, calls  # the folder holding `current` was flushed once it pointed at r1
    before_rename = [call for call in calls if " current= " in call]
    assert any("previousVersion.tmp." in call for call in before_rename)  # written, flushed, then renamed


def truncated(path: Path, how: str) -> None:
    text = path.read_text()
    path.write_text("" if how == "empty" else text.rstrip("\n")[: max(1, len(text) // 2)])


def staged_host(tmp_path: Path, artifact) -> str:
    prepared, data = artifact
    deploy_to = str(tmp_path / "app")
    for release in ("r1", "r2"):
        command = command_line("stage", deploy_to, release=release, digest=prepared.digest, source="upload")
        assert run(command, stdin=data)[0] == 0
    assert run(command_line("switch", deploy_to, target="r1", expected="", mode="deploy", history="{}"))[0] == 0
    previous = f"{deploy_to}/releases/r1"
    switched = command_line(
        "switch", deploy_to, target="r2", expected="releases/r1", mode="deploy", previous=previous, history="{}"
    )
    assert run(switched)[0] == 0
    return deploy_to


def gathered(deploy_to: str):
    code, out = run(command_line("gather", deploy_to))
    assert code == 0
    return parse_state("web1", out, deploy_to)


@pytest.mark.parametrize("how", ["empty", "torn"])
def test_a_damaged_previous_version_is_reported_and_never_followed(tmp_path, artifact, how):
    deploy_to = staged_host(tmp_path, artifact)
    truncated(Path(deploy_to, "releases", "r2", "previousVersion"), how)
    state = gathered(deploy_to)
    assert "releases/r2/previousVersion" in state.damaged
    plan = planning.plan_rollback(deploy_to, {"web1": state}, {})
    assert not plan.acting() and plan.refusal  # the host is left untouched, not sent anywhere


@pytest.mark.parametrize("how", ["empty", "torn"])
def test_a_damaged_release_metadata_makes_the_release_unusable(tmp_path, artifact, how):
    deploy_to = staged_host(tmp_path, artifact)
    truncated(Path(deploy_to, ".deployer", "meta", "r1"), how)
    state = gathered(deploy_to)
    assert state.releases["r1"].status == STATUS_DAMAGED and ".deployer/meta/r1" in state.damaged
    assert planning.plan_rollback(deploy_to, {"web1": state}, {}, "r1").refusal
    # And the host's own switch refuses it too, whatever the controller asked.
    code, out = run(command_line("switch", deploy_to, target="r1", expected="releases/r2", mode="rollback"))
    assert code == 20 and "not usable (status: damaged)" in out.error_message()


@pytest.mark.parametrize("how", ["empty", "torn"])
def test_a_damaged_pin_is_reported_never_trusted(tmp_path, artifact, how):
    deploy_to = staged_host(tmp_path, artifact)
    pin = Path(deploy_to, ".deployer", "pin")
    pin.write_text('{"release": "r1", "why": "incident"}\n')
    truncated(pin, how)
    state = gathered(deploy_to)
    assert state.pin is None and ".deployer/pin" in state.damaged


STATE_SYNC = """#!/bin/sh
# Record, at each call, the state files a session's last steps write or remove.
d="$DEPLOY_TO/.deployer"
{
    printf 'schema=%s' "$(cut -d' ' -f1 "$d/schema" 2>/dev/null)"
    printf ' pin=%s' "$([ -e "$d/pin" ] && echo yes || echo no)"
    printf ' bad=%s' "$(ls "$d/bad" 2>/dev/null | tr '\\n' ,)"
    printf ' lock=%s\\n' "$([ -d "$d/lock" ] && echo yes || echo no)"
} >> "$SYNC_LOG"
exec REAL_SYNC "$@"
"""


@pytest.fixture
def state_recorded(recorded):
    env, log, deploy_to = recorded
    fake = Path(env["PATH"].split(":")[0], "sync")
    fake.write_text(STATE_SYNC.replace("REAL_SYNC", shutil.which("sync") or "/bin/sync"))
    return env, log, deploy_to


def test_a_sessions_last_records_are_flushed_before_it_ends(artifact, state_recorded):
    """The schema, the pin and a bad mark are the switch's last renames: before, the session ended
    with them renamed but never flushed (a power cut after the controller was told could lose them)."""
    env, log, deploy_to = state_recorded
    prepared, data = artifact
    for release in ("r0", "r1"):
        run(command_line("stage", deploy_to, release=release, digest=prepared.digest, source="upload"), env, data)
    switched = command_line(
        "switch",
        deploy_to,
        target="r1",
        expected="",
        mode="rollback",
        schema="7 7 r1",
        pin='{"release": "r1"}',
        mark_bad="r0",
        bad_info='{"why": "broken"}',
    )
    code, out = run(switched, env)
    assert code == 0 and out.has("pinned") and out.has("marked_bad")
    assert log.read_text().splitlines()[-1] == "schema=7 pin=yes bad=r0, lock=no"


def test_removing_the_pin_and_the_lock_is_flushed_before_the_session_ends(artifact, state_recorded):
    env, log, deploy_to = state_recorded
    prepared, data = artifact
    run(command_line("stage", deploy_to, release="r1", digest=prepared.digest, source="upload"), env, data)
    code, out = run(command_line("gather", deploy_to, lock="take", lock_token="t" * 32, lock_info="{}"), env)
    assert code == 0 and out.first("lock") == ["taken"]
    Path(deploy_to, ".deployer", "pin").write_text('{"release": "r1"}\n')
    code, out = run(command_line("finish", deploy_to, unpin="1", unlock="t" * 32), env)
    assert code == 0 and out.has("unpinned") and out.has("unlocked")
    assert log.read_text().splitlines()[-1].endswith("pin=no bad= lock=no")


RECORDS_SYNC = """#!/bin/sh
# Record, at each call, which of the switch's records are written whole and which are in place.
d="$DEPLOY_TO/.deployer"
{
    printf 'current=%s' "$(readlink "$DEPLOY_TO/current" 2>/dev/null)"
    printf ' history=%s' "$(grep -c '"op": "rollback"' "$d/history.jsonl" 2>/dev/null)"
    printf ' temporary=%s' "$(cd "$d" && ls pin.tmp.* bad/r2.tmp.* 2>/dev/null | sed 's/[.]tmp[.].*//' | tr '\\n' ,)"
    printf ' pin=%s bad=%s' "$([ -e "$d/pin" ] && echo yes || echo no)" "$([ -e "$d/bad/r2" ] && echo yes || echo no)"
    printf ' lock=%s\\n' "$([ -d "$d/lock" ] && echo yes || echo no)"
} >> "$SYNC_LOG"
exec REAL_SYNC "$@"
"""


def test_a_rollbacks_records_are_flushed_together_before_any_is_renamed_into_place(tmp_path, artifact, recorded):
    """History, pin and bad mark: each written whole, one flush for the three, then the renames,
    and the session's last flush once they are in place and the lock is released."""
    env, log, _ = recorded
    deploy_to = staged_host(tmp_path, artifact)
    Path(env["PATH"].split(":")[0], "sync").write_text(
        RECORDS_SYNC.replace("REAL_SYNC", shutil.which("sync") or "/bin/sync")
    )
    env["DEPLOY_TO"] = deploy_to
    code, out = run(command_line("gather", deploy_to, lock="take", lock_token="t" * 32, lock_info="{}"), env)
    assert code == 0 and out.first("lock") == ["taken"]
    log.write_text("")
    history = '{"op": "rollback", "release": "r1"}'
    switched = command_line(
        "switch", deploy_to, target="r1", expected="releases/r2", mode="rollback", history=history,
        pin='{"release": "r1"}', mark_bad="r2", bad_info='{"why": "500s"}', unlock="t" * 32,
    )  # fmt: skip
    code, out = run(switched, env)
    assert code == 0 and [name for name, _ in out.records if name in ("history_written", "pinned", "marked_bad")] == [
        "history_written",
        "pinned",
        "marked_bad",
    ]
    assert log.read_text().splitlines() == [
        # the switch itself, flushed before it is read back
        "current=releases/r1 history=0 temporary= pin=no bad=no lock=yes",
        # the three records at once: the history's line and both records whole, none in place yet
        "current=releases/r1 history=1 temporary=bad/r2,pin, pin=no bad=no lock=yes",
        # the renames and the lock's release, flushed before the session ends
        "current=releases/r1 history=1 temporary= pin=yes bad=yes lock=no",
    ]
    assert Path(deploy_to, ".deployer", "pin").read_text() == '{"release": "r1"}\n'
    assert Path(deploy_to, ".deployer", "bad", "r2").read_text() == '{"why": "500s"}\n'


def test_an_operations_gather_takes_the_lock_with_one_flush_and_leaves_free_space_to_the_readouts(
    tmp_path, artifact, recorded
):
    """The lock's details are flushed before it is renamed into place (never visible without them);
    the rename itself is left to the next flush. `df` runs only for a gather that takes no lock."""
    env, log, _ = recorded
    deploy_to = staged_host(tmp_path, artifact)
    env["DEPLOY_TO"] = deploy_to
    log.write_text("")
    code, out = run(command_line("gather", deploy_to, lock="take", lock_token="t" * 32, lock_info="{}"), env)
    assert code == 0 and out.first("lock") == ["taken"] and not out.has("free_kb")
    calls = log.read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith("args=-f .deployer/lock.new."), calls
    code, out = run(command_line("gather", deploy_to), env)
    assert code == 0 and int(out.first("free_kb")[0]) > 0
