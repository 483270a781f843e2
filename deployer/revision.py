"""What a release is to people: its version label and git commit (and branch, author, CI run).

Recorded once per deploy for the whole fleet, from the first source that knows each field:
explicit flags (`--version`, `--commit`), the release's own `release.yml` (`version:`, `commit:`),
the git work tree the artifact folder lives in, then the usual CI variables. None is required.
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, fields

from deployer.errors import ArtifactError

VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")  # SHA-1, or SHA-256 repositories
COMMIT_PREFIX = re.compile(r"^[0-9a-f]{7,64}$")
SHORT = 8


@dataclass(frozen=True)
class Revision:
    version: str = ""  # a label people use: "1.4.2", "v1.4.2-3-gabc1234", "build-127"
    commit: str = ""  # full hex sha
    ref: str = ""  # branch or tag
    dirty: bool = False  # built from a work tree with uncommitted changes
    author: str = ""  # the commit's author
    subject: str = ""  # the commit's first line
    build_url: str = ""  # the CI run that built it

    def merged(self, fallback: Revision) -> Revision:
        """This revision, with the fields it lacks taken from `fallback` (unless that one describes
        another commit: a work tree or CI job that is not what was named)."""
        if self.commit and fallback.commit and self.commit != fallback.commit:
            return self
        values = {f.name: getattr(self, f.name) or getattr(fallback, f.name) for f in fields(self)}
        return Revision(**values)

    @property
    def short_commit(self) -> str:
        return self.commit[:SHORT]

    def label(self) -> str:
        """ "1.4.2 (abc12345)", "abc12345", "1.4.2" or "" for the tables."""
        commit = self.short_commit + ("+dirty" if self.dirty and self.commit else "")
        if self.version and commit:
            return f"{self.version} ({commit})"
        return self.version or commit

    def as_dict(self) -> dict[str, str | bool]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


def revision_file(revision: Revision) -> str:
    """The REVISION file put in a release (plain text, for the app and for people on the host)."""
    lines = [f"{name} {value}" for name, value in revision.as_dict().items() if name != "dirty"]
    if revision.dirty:
        lines.append("dirty yes")
    return "\n".join(lines)


def check_version(value: str, where: str) -> str:
    if not VERSION.match(value):
        raise ArtifactError(f"{where}: version {value!r} must match {VERSION.pattern} (letters, digits, . _ + -)")
    return value


def check_commit(value: str, where: str) -> str:
    value = value.strip().lower()
    if not COMMIT.match(value):
        raise ArtifactError(f"{where}: commit {value!r} must be a full hex sha (40 characters)")
    return value


def clean_version(text: str) -> str:
    """A label from git or CI made safe for the record: other characters become "-", cut at 64."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]", "-", text.strip()).lstrip("._+-")[:64]
    return cleaned


def one_line(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


def from_flags(version: str | None, commit: str | None) -> Revision:
    return Revision(
        version=check_version(version, "--version") if version else "",
        commit=check_commit(commit, "--commit") if commit else "",
    )


def from_manifest(data: Mapping[str, object], where: str) -> Revision:
    """The `version:` and `commit:` a release's release.yml declares."""
    version, commit = data.get("version"), data.get("commit")
    if version is not None and not isinstance(version, (str, int, float)):
        raise ArtifactError(f"{where}: version must be text, got {version!r}")
    if commit is not None and not isinstance(commit, str):
        raise ArtifactError(f"{where}: commit must be text, got {commit!r}")
    return Revision(
        version=check_version(str(version), where) if version is not None else "",
        commit=check_commit(commit, where) if commit else "",
    )


def git_command(folder: str) -> list[str]:
    """`git` in `folder` with the settings that would run that repository's own programs turned off:
    the file system monitor (`core.fsmonitor`, run by `git status`), hooks, and clean/smudge/process
    filters (run when git compares the work tree). A repository is data, never code the tool runs."""
    safe = ["git", "-C", folder, "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null"]
    try:
        listed = subprocess.run(
            [*safe, "config", "--null", "--get-regexp", r"^filter\."], capture_output=True, timeout=30, check=False
        ).stdout.decode(errors="replace")
    except (OSError, subprocess.TimeoutExpired):
        listed = ""
    drivers = {entry.split("\n", 1)[0].rsplit(".", 1)[0] for entry in listed.split("\0") if entry.startswith("filter.")}
    for driver in sorted(drivers):
        safe += ["-c", f"{driver}.clean=cat", "-c", f"{driver}.smudge=cat", "-c", f"{driver}.process="]
        safe += ["-c", f"{driver}.required=false"]
    return safe


def from_git(folder: str, ref: str = "HEAD") -> Revision:
    """What git knows about `ref` in the work tree holding `folder` (empty when it is not in one)."""
    command = git_command(folder)

    def git(*args: str) -> str:
        try:
            done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if not COMMIT.match(commit):
        return Revision()
    dirty = ref == "HEAD" and bool(git("status", "--porcelain", "--untracked-files=no"))
    described = git("describe", "--tags", "--always", commit)
    branch = git("rev-parse", "--abbrev-ref", ref) if ref == "HEAD" else ref
    return Revision(
        version=clean_version(described) + ("-dirty" if dirty else "") if described else "",
        commit=commit,
        ref=one_line("" if branch == "HEAD" else branch, 100),
        dirty=dirty,
        author=one_line(git("log", "-1", "--format=%an <%ae>", commit)),
        subject=one_line(git("log", "-1", "--format=%s", commit)),
    )


def pack_git(repository: str, ref: str, destination: str) -> Revision:
    """`git archive` of REF in REPOSITORY as a reproducible .tar.gz at DESTINATION (the same commit
    gives the same bytes, so the same digest: redeploying a commit reuses its release); returns
    what the commit is."""
    where = f"--git {ref}"
    if not os.path.isdir(repository):
        raise ArtifactError(f"{where}: no folder {repository} (--repo)")
    found = from_git(repository, ref)
    if not found.commit:
        raise ArtifactError(f"{where}: no commit {ref!r} in the git repository at {repository}")
    with tempfile.TemporaryFile() as errors:
        try:
            archiving = subprocess.Popen(
                [*git_command(repository), "archive", "--format=tar", found.commit],
                stdout=subprocess.PIPE,
                stderr=errors,
            )
        except OSError as exc:
            raise ArtifactError(f"{where}: git archive failed ({exc})") from None
        assert archiving.stdout is not None
        with open(destination, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as zipped:
            # streamed: an archive of any size needs a chunk of memory, not its size
            while chunk := archiving.stdout.read(1024 * 1024):
                zipped.write(chunk)
        try:
            status = archiving.wait(timeout=600)
        except subprocess.TimeoutExpired:
            archiving.kill()
            raise ArtifactError(f"{where}: git archive did not finish within 600s") from None
        if status != 0:
            errors.seek(0)
            said = errors.read(4096).decode(errors="replace").strip()
            raise ArtifactError(f"{where}: git archive failed: {said}")
    return found


# (commit, ref, tag, run URL) variables of the CI systems people run deploys from.
CI_VARIABLES = (
    ("GITHUB_SHA", "GITHUB_REF_NAME", "", ""),  # GitHub Actions (run URL built below)
    ("CI_COMMIT_SHA", "CI_COMMIT_REF_NAME", "CI_COMMIT_TAG", "CI_JOB_URL"),  # GitLab CI
    ("BUILDKITE_COMMIT", "BUILDKITE_BRANCH", "BUILDKITE_TAG", "BUILDKITE_BUILD_URL"),
    ("CIRCLE_SHA1", "CIRCLE_BRANCH", "CIRCLE_TAG", "CIRCLE_BUILD_URL"),
    ("GIT_COMMIT", "GIT_BRANCH", "", "BUILD_URL"),  # Jenkins
)


def from_ci(env: Mapping[str, str] | None = None) -> Revision:
    """The commit, branch or tag and run URL of the CI job this runs in, if any."""
    env = os.environ if env is None else env
    for commit_name, ref_name, tag_name, url_name in CI_VARIABLES:
        commit = env.get(commit_name, "").strip().lower()
        if not COMMIT.match(commit):
            continue
        tag = env.get(tag_name, "") if tag_name else ""
        url = env.get(url_name, "") if url_name else ""
        if commit_name == "GITHUB_SHA" and env.get("GITHUB_RUN_ID"):
            server = env.get("GITHUB_SERVER_URL", "https://github.com")
            url = f"{server}/{env.get('GITHUB_REPOSITORY', '')}/actions/runs/{env['GITHUB_RUN_ID']}"
        return Revision(
            version=clean_version(tag) if tag else "",
            commit=commit,
            ref=one_line(tag or env.get(ref_name, ""), 100),
            build_url=one_line(url, 300),
        )
    return Revision()


def collect(
    flags: Revision, manifest: Revision, artifact_source: str, env: Mapping[str, str] | None = None
) -> Revision:
    """The release's revision: flags, then release.yml, then the artifact folder's git tree, then CI."""
    found = flags.merged(manifest)
    if os.path.isdir(artifact_source):
        found = found.merged(from_git(artifact_source))
    return found.merged(from_ci(env))
