"""The pipeline examples in docs/ci/ run here, job by job, against the local fleet, so they cannot rot.

A small runner executes each job the way its platform does: GitHub Actions' `run:` steps with
`bash -e` and the job's and step's `env:` (`${{ secrets.* }}`, `${{ inputs.* }}` filled in from
the test; an expression the test does not know fails the test); GitLab's `extends`, `variables`,
`before_script` and `script`. `uses:` steps are the platform's (checkout: the test's git repository
is the working folder; setup-python: the test's virtualenv; the JUnit publishers: the report file
they name must exist). The one step that needs the network, `pip install deployer @ git+...`, is
replaced by the virtualenv where the package was pip-installed from this checkout.

Each host's state is read back over OpenSSH (HostView), not from the tool's output.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.locate import SAMPLE_APP
from deployer.playground.localfleet import LocalFleet
from tests.conftest import REPO, HostView, fleet_fingerprints

pytestmark = pytest.mark.fleet
EXPRESSION = re.compile(r"\$\{\{\s*([^}]+?)\s*\}\}")
INSTALL = re.compile(r"^pip install \"deployer @ git\+https://[^\"]+\"$")


class Job:
    """The outcome of one job: its exit status and everything it printed."""

    def __init__(self, code: int, output: str) -> None:
        self.code = code
        self.output = output


class Project:
    """A git repository holding an app and its inventories, with a commit per version."""

    def __init__(self, root: Path, venv: Path, fleet: LocalFleet, deploy_to: str) -> None:
        self.root = root
        self.venv = venv
        self.fleet = fleet
        self.home = root.parent / "home"  # the CI machine's home: empty until a job sets up the key
        self.home.mkdir()
        shutil.copytree(SAMPLE_APP, root)
        self.git("init", "-q", "-b", "main")
        self.deploy_to = {"production": f"{deploy_to}-prod", "integration": f"{deploy_to}-int"}
        fingerprints = root.parent / "fingerprints.txt"
        fingerprints.write_text(fleet_fingerprints(fleet))
        laptop = root.parent / "laptop"  # where the inventories were written: a home with the key
        (laptop / ".ssh").mkdir(parents=True)
        shutil.copy(fleet.identity_file, laptop / ".ssh" / "deploy_key")
        hosts = ",".join(f"{h.name}={h.address}:{h.port}" for h in fleet.hosts())
        for name, folder in self.deploy_to.items():
            subprocess.run(
                [
                    str(venv / "bin" / "deployer"),
                    "init",
                    "--hosts",
                    hosts,
                    "--identity-file",
                    "~/.ssh/deploy_key",
                    "--deploy-to",
                    folder,
                    "--out",
                    f"deploy/{name}.yml",
                    "--accept-fingerprints",
                    str(fingerprints),
                ],
                cwd=root,
                env={**os.environ, "HOME": str(laptop)},
                capture_output=True,
                check=True,
            )
        self.commit("v1")

    def git(self, *args: str) -> str:
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "ci",
            "GIT_AUTHOR_EMAIL": "ci@example.org",
            "GIT_COMMITTER_NAME": "ci",
            "GIT_COMMITTER_EMAIL": "ci@example.org",
        }
        return subprocess.run(["git", *args], cwd=self.root, env=env, capture_output=True, text=True, check=True).stdout

    def commit(self, version: str) -> str:
        (self.root / "VERSION").write_text(version + "\n")
        self.git("add", "-A")
        self.git("commit", "-q", "-m", f"release {version}")
        return self.git("rev-parse", "HEAD").strip()

    def environment(self, extra: dict[str, str]) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("DEPLOYER_", "GITHUB_", "CI_"))}
        env.update(HOME=str(self.home), PATH=f"{self.venv / 'bin'}:{env.get('PATH', '')}")
        env["DEPLOYER_LOG_DIR"] = str(self.root.parent / "runs")
        env.update(extra)
        return env

    def shell(self, script: str, env: dict[str, str], shell: list[str]) -> tuple[int, str]:
        done = subprocess.run(
            [*shell, script], cwd=self.root, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        return done.returncode, done.stdout + done.stderr

    def deploy_by_hand(self, fleet: str, commit: str) -> None:
        """A deploy outside the pipeline (the integration fleet's baseline before its first drill)."""
        done = subprocess.run(
            ["deployer", "deploy", "--git", commit, "--inventory", f"deploy/{fleet}.yml"],
            cwd=self.root,
            env=self.environment({}),
            capture_output=True,
            text=True,
            check=False,
        )
        logs = sorted((self.root.parent / "runs").glob("*.log"), key=lambda log: log.stat().st_mtime)
        assert done.returncode == 0, done.stdout + done.stderr + (logs[-1].read_text()[-4000:] if logs else "")

    def versions(self, fleet: str) -> set[str]:
        return {HostView(self.fleet, host.name).version(self.deploy_to[fleet]) for host in self.fleet.hosts()}


def expressions(text: str, known: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        assert match.group(1) in known, f"the example uses ${{{{ {match.group(1)} }}}}, which this runner does not know"
        return known[match.group(1)]

    return EXPRESSION.sub(value, text)


def run_github_job(project: Project, job_name: str, event: dict[str, str], known: dict[str, str]) -> Job:
    workflow = yaml.safe_load((REPO / "docs" / "ci" / "github-actions.yml").read_text())
    job = workflow["jobs"][job_name]
    env = project.environment({**event, "GITHUB_ACTIONS": "true"})
    env.update({key: expressions(str(value), known) for key, value in (workflow.get("env") or {}).items()})
    env.update({key: expressions(str(value), known) for key, value in (job.get("env") or {}).items()})
    output = ""
    failed = 0
    for step in job["steps"]:
        runs_always = step.get("if") == "always()"
        if failed and not runs_always:
            continue
        if "uses" in step:
            action = step["uses"].split("@")[0]
            assert action in ("actions/checkout", "actions/setup-python", "mikepenz/action-junit-report"), action
            if action == "mikepenz/action-junit-report":
                assert (project.root / step["with"]["report_paths"]).is_file(), "no JUnit report to publish"
            continue
        if INSTALL.match(step["run"].strip()):
            continue  # the virtualenv on PATH has the package, pip-installed from this checkout
        step_env = {**env, **{key: expressions(str(value), known) for key, value in (step.get("env") or {}).items()}}
        code, printed = project.shell(expressions(step["run"], known), step_env, ["bash", "-e", "-c"])
        output += printed
        if code:
            failed = code
    return Job(failed, output)


def run_gitlab_job(project: Project, job_name: str, variables: dict[str, str]) -> Job:
    pipeline = yaml.safe_load((REPO / "docs" / "ci" / "gitlab-ci.yml").read_text())
    job: dict[str, Any] = dict(pipeline[job_name])
    parent = pipeline[job.pop("extends")] if "extends" in job else {}  # the examples extend one template
    job = {**parent, **job, "variables": {**(parent.get("variables") or {}), **(job.get("variables") or {})}}
    env = project.environment(variables)
    env.update({key: str(value) for key, value in (pipeline.get("variables") or {}).items()})
    env.update({key: str(value) for key, value in (job.get("variables") or {}).items()})
    lines = [line for line in [*job.get("before_script", []), *job["script"]] if not INSTALL.match(line.strip())]
    code, output = project.shell("set -e\n" + "\n".join(lines), env, ["sh", "-c"])
    reports = (job.get("artifacts") or {}).get("reports") or {}
    if "junit" in reports:
        assert (project.root / reports["junit"]).is_file(), "no JUnit report for the merge request"
    return Job(code, output)


@pytest.fixture
def project(tmp_path: Path, venv: Path, local_fleet: LocalFleet, deploy_to: str) -> Project:
    made = Project(tmp_path / "shop", venv, local_fleet, deploy_to)
    yield made
    for host in local_fleet.hosts():
        for folder in made.deploy_to.values():
            shutil.rmtree(os.path.join(host.srv, folder.removeprefix("/srv/")), ignore_errors=True)


def test_github_actions_example(project: Project, local_fleet: LocalFleet) -> None:
    secrets = {"secrets.DEPLOY_SSH_KEY": Path(local_fleet.identity_file).read_text().strip()}

    def push(branch: str, sha: str) -> dict[str, str]:
        return {"GITHUB_SHA": sha, "GITHUB_REF_NAME": branch, "GITHUB_ACTOR": "octocat", "GITHUB_EVENT_NAME": "push"}

    nothing = run_github_job(project, "rollback", push("main", "x"), {**secrets, "inputs.to": ""})
    assert nothing.code == 3 and "::error title=rollback refused::" in nothing.output  # shown on the run's page

    v1 = project.git("rev-parse", "HEAD").strip()
    deployed = run_github_job(project, "deploy", push("main", v1), secrets)
    assert deployed.code == 0, deployed.output
    assert project.versions("production") == {"v1"}
    v2 = project.commit("v2")
    assert run_github_job(project, "deploy", push("main", v2), secrets).code == 0
    assert project.versions("production") == {"v2"}

    back = run_github_job(project, "rollback", push("main", v2), {**secrets, "inputs.to": v1[:10]})
    assert back.code == 0, back.output
    assert project.versions("production") == {"v1"}
    history = HostView(local_fleet, "web1").sh("cat %s", f"{project.deploy_to['production']}/.deployer/history.jsonl")
    assert "manual rollback by octocat" in history

    # integration runs v1 (deployed by hand here); a merge of v2 into `integration` runs the drill
    project.deploy_by_hand("integration", v1)
    drill = run_github_job(project, "drill", push("integration", v2), secrets)
    assert drill.code == 0, drill.output
    assert project.versions("integration") == {"v2"}
    assert 'failures="0"' in (project.root / "drill-junit.xml").read_text()


def test_gitlab_ci_example(project: Project, local_fleet: LocalFleet, tmp_path: Path) -> None:
    key_file = tmp_path / "DEPLOY_SSH_KEY"  # a File-type CI/CD variable: the variable holds its path
    shutil.copy(local_fleet.identity_file, key_file)
    variables = {"DEPLOY_SSH_KEY": str(key_file), "GITLAB_USER_LOGIN": "tanuki", "CI_PIPELINE_ID": "77"}

    v1 = project.git("rev-parse", "HEAD").strip()
    deployed = run_gitlab_job(project, "deploy", {**variables, "CI_COMMIT_SHA": v1, "CI_COMMIT_BRANCH": "main"})
    assert deployed.code == 0, deployed.output
    assert project.versions("production") == {"v1"}
    v2 = project.commit("v2")
    assert run_gitlab_job(project, "deploy", {**variables, "CI_COMMIT_SHA": v2, "CI_COMMIT_BRANCH": "main"}).code == 0
    assert project.versions("production") == {"v2"}
    back = run_gitlab_job(project, "rollback", {**variables, "CI_COMMIT_SHA": v2, "CI_COMMIT_BRANCH": "main"})
    assert back.code == 0, back.output
    assert project.versions("production") == {"v1"}

    project.deploy_by_hand("integration", v1)
    drill = run_gitlab_job(project, "drill", {**variables, "CI_COMMIT_SHA": v2, "CI_COMMIT_BRANCH": "integration"})
    assert drill.code == 0, drill.output
    assert project.versions("integration") == {"v2"}
    assert 'failures="0"' in (project.root / "drill-junit.xml").read_text()
