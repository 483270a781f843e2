"""Release ids and artifact checks."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployer.errors import ArtifactError, InputError
from deployer.release import (
    Manifest,
    PreparedArtifact,
    check_release_id,
    is_release_id,
    new_release_id,
    pack_directory,
    sha256_file,
)


def make_tar(path, members):
    with tarfile.open(path, "w:gz") as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return str(path)


def file_member(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def link_member(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def test_new_ids_sort_by_time_and_never_collide():
    now = datetime(2026, 11, 22, 4, 31, 0, tzinfo=timezone.utc)
    first = new_release_id(now, "abcdef0123", set())
    assert first == "20261122T043100Z-abcdef01"
    assert new_release_id(now, "abcdef0123", {first}) == first + ".2"
    assert new_release_id(now, "abcdef0123", {first, first + ".2"}) == first + ".3"
    assert is_release_id(first)


@pytest.mark.parametrize("bad", ["", ".", "..", "-rf", ".hidden", "a/b", "a b", "a\nb", "$(x)", "a" * 129, "é"])
def test_bad_release_ids_refused(bad):
    with pytest.raises(InputError):
        check_release_id(bad)


@given(st.text(max_size=40))
def test_valid_ids_are_shell_and_path_safe(text):
    if is_release_id(text):
        assert not text.startswith(("-", ".")) and "/" not in text
        assert all(ch.isascii() and (ch.isalnum() or ch in "._-") for ch in text)


@pytest.mark.parametrize(
    "member, words",
    [
        (file_member("/etc/passwd"), "absolute"),
        (file_member("../escape"), "'..'"),
        (file_member("a/../../escape"), "'..'"),
        (link_member("evil", "/etc/passwd"), "outside"),
        (link_member("sub/evil", "../../x"), "outside"),
        (link_member("hard", "../x", tarfile.LNKTYPE), "outside"),
        (file_member("previousVersion"), "written by the deployer"),
    ],
)
def test_unsafe_members_are_named(tmp_path, member, words):
    path = make_tar(tmp_path / "a.tar.gz", [file_member("ok.txt"), member])
    with pytest.raises(ArtifactError) as caught, PreparedArtifact(path):
        pass
    assert words in str(caught.value) and repr(member[0].name) in str(caught.value)


def test_device_member_refused(tmp_path):
    info = tarfile.TarInfo("dev")
    info.type = tarfile.CHRTYPE
    path = make_tar(tmp_path / "a.tar.gz", [(info, None)])
    with pytest.raises(ArtifactError, match="device"), PreparedArtifact(path):
        pass


def test_links_inside_release_are_fine(tmp_path):
    path = make_tar(
        tmp_path / "a.tar.gz",
        [file_member("sub/f"), link_member("l", "sub/f"), link_member("sub/up", "../l")],
    )
    with PreparedArtifact(path) as artifact:
        assert artifact.digest == sha256_file(path)[0]


def test_folder_is_packed_reproducibly(tmp_path):
    tree = tmp_path / "app"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "run").write_text("echo hi\n")
    (tree / "VERSION").write_text("v1\n")
    with PreparedArtifact(str(tree)) as one:
        first = one.digest
    with PreparedArtifact(str(tree)) as two:
        assert two.digest == first
        with tarfile.open(two.path) as archive:
            assert sorted(archive.getnames()) == ["VERSION", "bin", "bin/run"]
            assert all(m.uid == 0 and m.uname == "" for m in archive.getmembers())


@pytest.mark.parametrize("content, words", [(b"not a tarball", "not a readable"), (None, "no such file")])
def test_unreadable_artifacts(tmp_path, content, words):
    path = tmp_path / "x.tar.gz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ArtifactError, match=words), PreparedArtifact(str(path)):
        pass


def test_empty_archive_refused(tmp_path):
    path = make_tar(tmp_path / "e.tar.gz", [])
    with pytest.raises(ArtifactError, match="empty"), PreparedArtifact(path):
        pass


@pytest.mark.parametrize(
    "text, expected",
    [
        ("schema_version: 3\nmin_schema: 2\n", Manifest(3, 2)),
        ("schema_version: 3\n", Manifest(3, 3)),
    ],
)
def test_manifest_is_read_from_the_artifact(tmp_path, text, expected):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "release.yml").write_text(text)
    with PreparedArtifact(str(tmp_path / "app")) as artifact:
        assert artifact.manifest == expected


@pytest.mark.parametrize(
    "text, words",
    [
        ("schema_version: two\n", "schema_version must be a whole number"),
        ("min_schema: 1\n", "schema_version must be a whole number"),
        ("schema_version: 1\nmin_schema: 2\n", "above schema_version"),
        ("schema_version: 1\nmigrations: yes\n", "unknown key 'migrations'"),
        ("- 1\n", "expected a mapping"),
        ("schema_version: [\n", "not valid YAML"),
    ],
)
def test_bad_manifest_is_an_artifact_error_naming_the_file(tmp_path, text, words):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "release.yml").write_text(text)
    with pytest.raises(ArtifactError) as caught, PreparedArtifact(str(tmp_path / "app")):
        pass
    assert "release.yml" in str(caught.value) and words in str(caught.value)


@pytest.mark.parametrize(
    ("source", "pull", "sha256", "words"),
    [
        ("https://cdn.example.org/app.tar.gz", "", "", "needs --sha256"),
        ("https://cdn.example.org/app.tar.gz", "", "abc", "needs --sha256"),
        ("https://cdn.example.org/a b.tar.gz", "", "a" * 64, "is not an http:// or https:// URL"),
        ("https://cdn.example.org/app.tar.gz", "https://other/app.tar.gz", "a" * 64, "the artifact is a URL already"),
        ("LOCAL", "ftp://cdn.example.org/app.tar.gz", "", "is not an http:// or https:// URL"),
        ("LOCAL", "", "a" * 64, "--sha256 is for an artifact given as a URL"),
    ],
)
def test_pull_inputs_are_checked_before_anything_else(tmp_path, source, pull, sha256, words):
    local = tmp_path / "app.tar.gz"
    pack_directory(str(_tree(tmp_path)), str(local))
    with (
        pytest.raises(InputError, match=words),
        PreparedArtifact(str(local) if source == "LOCAL" else source, pull=pull, sha256=sha256),
    ):
        pass


def test_an_artifact_given_as_a_url_is_named_without_its_query():
    url = "https://bucket.s3.amazonaws.com/app.tar.gz?X-Amz-Credential=AKIA&X-Amz-Signature=s3cr3t"
    with PreparedArtifact(url, sha256="a" * 64) as artifact:
        assert artifact.url == url and artifact.digest == "a" * 64 and artifact.path == ""
        assert artifact.source == "https://bucket.s3.amazonaws.com/app.tar.gz?..."
        assert artifact.signer is None and artifact.manifest is None


def _tree(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir(exist_ok=True)
    (tree / "VERSION").write_text("v1\n")
    return tree


def test_what_is_sent_is_what_was_checked_when_the_file_is_written_again(tmp_path):
    """A build writing the artifact again while a deploy uploads it: the upload reads the private
    copy that was checked and digested (the source was mapped before, and a shorter rewrite killed
    the controller with SIGBUS). Run in a process of its own, where that SIGBUS would show."""
    tree = tmp_path / "app"
    tree.mkdir()
    (tree / "payload.bin").write_bytes(bytes(range(256)) * 8192)
    source = tmp_path / "app.tar.gz"
    pack_directory(str(tree), str(source))
    original = sha256_file(str(source))[0]
    program = (
        "import hashlib, sys\n"
        "from deployer.phases.stage import MappedArtifact\n"
        "from deployer.release import PreparedArtifact\n"
        "with PreparedArtifact(sys.argv[1]) as artifact:\n"
        "    mapped = MappedArtifact(artifact.path)\n"
        "    with open(sys.argv[1], 'wb') as rewriting:\n"  # truncated, then something else
        "        rewriting.write(b'a new build, shorter')\n"
        "    sent = hashlib.sha256(bytes(mapped.view)).hexdigest()\n"
        "    mapped.close()\n"
        "    print(sent == artifact.digest, artifact.digest)\n"
    )
    done = subprocess.run([sys.executable, "-c", program, str(source)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}"
    same, digest = done.stdout.split()
    assert same == "True" and digest == original  # the bytes checked, digested and sent: the original
    assert source.read_bytes() == b"a new build, shorter"
