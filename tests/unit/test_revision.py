"""Where a release's version and commit come from: flags, release.yml, the git work tree, CI variables."""

from __future__ import annotations

import hashlib
import subprocess
import tarfile

import pytest

from deployer.errors import ArtifactError
from deployer.release import PreparedArtifact
from deployer.revision import Revision, collect, from_ci, from_flags, from_git, pack_git, revision_file

SHA = "0123456789abcdef0123456789abcdef01234567"


def git(repo, *args):
    env = {"GIT_AUTHOR_NAME": "Ana", "GIT_AUTHOR_EMAIL": "ana@example.org", "GIT_COMMITTER_NAME": "Ana"}
    env |= {"GIT_COMMITTER_EMAIL": "ana@example.org", "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z"}
    env |= {"GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z", "PATH": "/usr/bin:/bin", "HOME": str(repo)}
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=env).stdout


@pytest.fixture
def repo(tmp_path):
    folder = tmp_path / "app"
    folder.mkdir()
    git(folder, "init", "-q", "-b", "main")
    (folder / "VERSION").write_text("one\n")
    git(folder, "add", ".")
    git(folder, "commit", "-q", "-m", "first: the one")
    git(folder, "tag", "v1.0.0")
    (folder / "VERSION").write_text("two\n")
    git(folder, "commit", "-q", "-am", "second")
    return folder


def test_the_work_tree_names_version_commit_branch_and_author(repo):
    found = from_git(str(repo))
    assert found.commit == git(repo, "rev-parse", "HEAD").strip()
    assert found.version == f"v1.0.0-1-g{found.commit[:7]}" and found.ref == "main"
    assert found.author == "Ana <ana@example.org>" and found.subject == "second" and not found.dirty


def test_a_dirty_work_tree_is_marked_as_such(repo):
    (repo / "VERSION").write_text("uncommitted\n")
    found = from_git(str(repo))
    assert found.dirty and found.version.endswith("-dirty")
    assert "dirty yes" in revision_file(found)


def test_a_folder_outside_git_knows_nothing(tmp_path):
    assert from_git(str(tmp_path)) == Revision()


@pytest.mark.parametrize(
    "env, expected",
    [
        (
            {"GITHUB_SHA": SHA, "GITHUB_REF_NAME": "main", "GITHUB_RUN_ID": "7", "GITHUB_REPOSITORY": "o/r"},
            Revision(commit=SHA, ref="main", build_url="https://github.com/o/r/actions/runs/7"),
        ),
        (
            {"CI_COMMIT_SHA": SHA, "CI_COMMIT_REF_NAME": "v2", "CI_COMMIT_TAG": "v2", "CI_JOB_URL": "https://gl/j/1"},
            Revision(version="v2", commit=SHA, ref="v2", build_url="https://gl/j/1"),
        ),
        ({"GIT_COMMIT": SHA, "GIT_BRANCH": "origin/main", "BUILD_URL": "https://j/1/"}, None),
        ({"BUILDKITE_COMMIT": SHA, "BUILDKITE_BRANCH": "main", "BUILDKITE_BUILD_URL": "https://bk/1"}, None),
        ({"CIRCLE_SHA1": SHA, "CIRCLE_BRANCH": "main", "CIRCLE_BUILD_URL": "https://c/1"}, None),
        ({"GITHUB_SHA": "HEAD"}, Revision()),  # not a commit: ignored
        ({}, Revision()),
    ],
)
def test_ci_variables(env, expected):
    found = from_ci(env)
    if expected is None:
        assert found.commit == SHA and found.ref and found.build_url
    else:
        assert found == expected


def test_flags_come_first_and_sources_describing_another_commit_are_ignored(repo):
    head = git(repo, "rev-parse", "HEAD").strip()
    flags = from_flags("2.0.0", None)
    assert collect(flags, Revision(), str(repo), {}).version == "2.0.0"
    assert collect(flags, Revision(), str(repo), {}).commit == head
    other = from_flags(None, SHA)  # a commit that is not the work tree's
    found = collect(other, Revision(), str(repo), {"CI_COMMIT_SHA": head})
    assert found == Revision(commit=SHA)


@pytest.mark.parametrize("version, commit", [("1.0 beta", None), ("-x", None), (None, "abc"), (None, "g" * 40)])
def test_bad_flags_are_refused_clearly(version, commit):
    with pytest.raises(ArtifactError, match="--version|--commit"):
        from_flags(version, commit)


def test_release_yml_declares_version_and_commit(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "release.yml").write_text(f"version: 3.1.4\ncommit: {SHA}\n")
    with PreparedArtifact(str(tmp_path / "app")) as artifact:
        assert artifact.manifest is None  # no schema declared
        assert artifact.revision == Revision(version="3.1.4", commit=SHA)


def test_git_archive_of_a_commit_is_reproducible(repo, tmp_path):
    first, second = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    built = pack_git(str(repo), "v1.0.0", str(first))
    (repo / "VERSION").write_text("dirty now\n")  # the work tree does not matter: the commit does
    pack_git(str(repo), "v1.0.0", str(second))
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    assert built.version == "v1.0.0" and built.subject == "first: the one" and not built.dirty
    with PreparedArtifact(str(first)) as artifact:
        assert artifact.size > 0


def test_an_unknown_ref_is_refused(repo, tmp_path):
    with pytest.raises(ArtifactError, match="no commit 'nope'"):
        pack_git(str(repo), "nope", str(tmp_path / "x.tar.gz"))
    assert not (tmp_path / "x.tar.gz").exists()


def test_a_subfolder_of_a_repository_is_archived_alone(repo, tmp_path):
    (repo / "web").mkdir()
    (repo / "web" / "VERSION").write_text("web\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "web app")
    out = tmp_path / "web.tar.gz"
    pack_git(str(repo / "web"), "HEAD", str(out))
    with tarfile.open(out) as archive:
        assert archive.getnames() == ["VERSION"]


def test_a_repositorys_own_programs_never_run(repo, tmp_path):
    """An artifact folder's repository is data: its fsmonitor hook (run by `git status`), its clean
    filter (run when git compares the work tree) and its smudge filter (run by `git archive`) are
    programs of whoever wrote .git/config, and reading the revision or packing --git runs none."""
    ran = tmp_path / "ran"
    hook = tmp_path / "evil"
    hook.write_text(f'#!/bin/sh\necho "$0 $*" >> {ran}\ncat\n')
    hook.chmod(0o755)
    git(repo, "config", "core.fsmonitor", str(hook))
    git(repo, "config", "filter.evil.clean", str(hook))
    git(repo, "config", "filter.evil.smudge", str(hook))
    (repo / ".gitattributes").write_text("* filter=evil\n")
    git(repo, "add", ".gitattributes")
    git(repo, "commit", "-q", "-m", "attributes")
    ran.unlink(missing_ok=True)  # committing here (the test's own git) may have run it
    (repo / "VERSION").write_text("changed, so status must look at it\n")
    found = from_git(str(repo))
    assert found.dirty and found.commit
    pack_git(str(repo), "HEAD", str(tmp_path / "app.tar.gz"))
    with tarfile.open(tmp_path / "app.tar.gz") as archive:
        assert archive.extractfile("VERSION").read() == b"two\n"
    assert not ran.exists(), ran.read_text()
