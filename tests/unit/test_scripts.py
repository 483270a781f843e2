"""The remote scripts run locally (no SSH) with hostile inputs: nothing injects, nothing breaks."""

from __future__ import annotations

import os
import subprocess
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployer.release import PreparedArtifact
from deployer.scripts import EXIT_CHANGED, EXIT_NOT_SYMLINK, EXIT_VALIDATE, command_line, parse_output
from deployer.state import parse_state


def run(command: str, stdin: bytes = b"", cwd: str | None = None):
    # sshd hands the command to the login shell as `sh -c COMMAND`; do the same.
    done = subprocess.run(["sh", "-c", command], input=stdin, capture_output=True, cwd=cwd, timeout=60)
    return done.returncode, parse_output(done.stdout.decode() + done.stderr.decode())


@pytest.fixture
def artifact(tmp_path_factory):
    tree = tmp_path_factory.mktemp("app")
    (tree / "VERSION").write_text("v1\n")
    with PreparedArtifact(str(tree)) as prepared:
        yield prepared, open(prepared.path, "rb").read()


def stage(deploy_to, release, artifact, validate="", **options):
    prepared, data = artifact
    command = command_line(
        "stage", deploy_to, release=release, digest=prepared.digest, source="upload", validate=validate, **options
    )
    return run(command, stdin=data)


def switch(deploy_to, release, expected, mode="deploy", previous="", **options):
    command = command_line(
        "switch",
        deploy_to,
        target=release,
        expected=expected,
        mode=mode,
        previous=previous,
        history='{"op": "test"}',
        **options,
    )
    return run(command)


HOSTILE = st.text(
    alphabet=st.sampled_from(list("ab ' \" $ ( ) ` ; & | * ? \\ - ! # ~ { } < > é\t")),
    min_size=1,
    max_size=16,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=HOSTILE)
def test_full_cycle_with_hostile_deploy_to(tmp_path, artifact, name):
    deploy_to = os.path.join(tempfile.mkdtemp(dir=tmp_path), "-" + name.replace("/", "_"))
    code, out = stage(deploy_to, "r1", artifact, validate="test -s VERSION")
    assert code == 0, out.text
    code, out = switch(deploy_to, "r1", "")
    assert code == 0, out.text
    assert os.readlink(os.path.join(deploy_to, "current")) == "releases/r1"
    with open(os.path.join(deploy_to, "current", "VERSION")) as handle:
        assert handle.read() == "v1\n"
    code, out = run(command_line("gather", deploy_to))
    state = parse_state("h", out, deploy_to)
    assert state.current == "r1" and state.releases["r1"].status == "ok"
    assert not list(tmp_path.glob("pwned*"))


def test_arguments_cannot_inject(tmp_path, artifact):
    marker = tmp_path / "pwned"
    deploy_to = str(tmp_path / f"x$(touch {marker})`touch {marker}`;touch {marker}")
    code, out = stage(deploy_to, "r1", artifact)
    assert code == 0, out.text
    code, out = switch(deploy_to, "r1", "", previous=f"$(touch {marker})\nsecond line")
    assert code == 0
    assert not marker.exists()
    with open(os.path.join(deploy_to, "releases", "r1", "previousVersion")) as handle:
        assert handle.read() == f"$(touch {marker})\nsecond line\n"


def test_switch_refuses_when_current_changed(tmp_path, artifact):
    deploy_to = str(tmp_path / "app")
    stage(deploy_to, "r1", artifact)
    stage(deploy_to, "r2", artifact)
    assert switch(deploy_to, "r1", "")[0] == 0
    code, out = switch(deploy_to, "r2", "")  # we believe there was no current: stale read
    assert code == EXIT_CHANGED and "changed since it was read" in out.error_message()
    assert os.readlink(os.path.join(deploy_to, "current")) == "releases/r1"


def test_switch_refuses_real_directory(tmp_path, artifact):
    deploy_to = str(tmp_path / "app")
    stage(deploy_to, "r1", artifact)
    os.mkdir(os.path.join(deploy_to, "current"))
    code, out = switch(deploy_to, "r1", "")
    assert code == EXIT_NOT_SYMLINK and "not a symlink" in out.error_message()
    assert os.path.isdir(os.path.join(deploy_to, "current")) and not os.path.islink(os.path.join(deploy_to, "current"))


def test_validation_failure_marks_release_failed(tmp_path, artifact):
    deploy_to = str(tmp_path / "app")
    code, out = stage(deploy_to, "r1", artifact, validate="echo broken >&2; exit 7")
    assert code == EXIT_VALIDATE
    assert out.first("validate_failed") == ["7"] and "broken" in out.tail()
    state = parse_state("h", run(command_line("gather", deploy_to))[1], deploy_to)
    assert state.releases["r1"].status == "failed"
    assert switch(deploy_to, "r1", "")[0] != 0  # a failed release can never go live
    assert not os.path.lexists(os.path.join(deploy_to, "current"))


def test_digest_mismatch_leaves_no_release(tmp_path, artifact):
    deploy_to = str(tmp_path / "app")
    prepared, data = artifact
    code, out = run(command_line("stage", deploy_to, release="r1", digest="0" * 64, source="upload"), stdin=data)
    assert code != 0 and "digest mismatch" in out.error_message()
    assert not os.path.exists(os.path.join(deploy_to, "releases", "r1"))


def test_release_folders_are_never_reused(tmp_path, artifact):
    deploy_to = str(tmp_path / "app")
    assert stage(deploy_to, "r1", artifact)[0] == 0
    code, out = stage(deploy_to, "r1", artifact)
    assert code != 0 and "never reused" in out.error_message()


def test_scripts_are_shellcheck_clean():
    from deployer.scripts import SCRIPT_NAMES, script_source

    for name in SCRIPT_NAMES:
        done = subprocess.run(["shellcheck", "-s", "sh", "-"], input=script_source(name).encode(), capture_output=True)
        assert done.returncode == 0, f"{name}: {done.stdout.decode()}"
