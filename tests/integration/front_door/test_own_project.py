"""From one's own project: the package installed by pip into a fresh virtualenv outside this
repository, a first inventory from `deployer init`, deploy/rollback/drill run from that folder, and
a project tasks.py that adds the deploy tasks and calls the Python API.

Each host's state is read back over OpenSSH (HostView), not from the tool's output."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer.playground.localfleet import LocalFleet
from tests.conftest import FLEET_SUBNET, HostView, fleet_fingerprints, run_on_a_terminal

pytestmark = pytest.mark.fleet


@pytest.fixture
def project(tmp_path: Path, venv: Path, local_fleet: LocalFleet, deploy_to: str) -> Iterator[Path]:
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "fingerprints.txt").write_text(fleet_fingerprints(local_fleet))
    yield folder
    for host in local_fleet.hosts():  # the test's own deploy folder, not the shared fleet's
        subprocess.run(["rm", "-rf", os.path.join(host.srv, deploy_to.removeprefix("/srv/"))], check=False)


def run(venv: Path, folder: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DEPLOYER_")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    env["DEPLOYER_LOG_DIR"] = str(folder / ".runs")
    done = subprocess.run(list(args), cwd=folder, env=env, capture_output=True, text=True, timeout=300, check=False)
    if ok:
        assert done.returncode == 0, f"{args} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def host_list(fleet: LocalFleet) -> str:
    return ",".join(f"{host.name}={host.address}:{host.port}" for host in fleet.hosts())


def init(
    venv: Path, folder: Path, fleet: LocalFleet, deploy_to: str, *extra: str, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    hosts = ["--hosts", host_list(fleet), "--identity-file", fleet.identity_file, "--deploy-to", deploy_to]
    return run(venv, folder, "deployer", "init", *hosts, *extra, ok=ok)


def versions(fleet: LocalFleet, deploy_to: str) -> set[str]:
    return {HostView(fleet, host.name).version(deploy_to) for host in fleet.hosts()}


def test_installed_package_from_its_own_folder(
    venv: Path, project: Path, local_fleet: LocalFleet, deploy_to: str
) -> None:
    imported = run(venv, project, "python", "-c", "import deployer; print(deployer.__file__)").stdout
    assert imported.startswith(str(venv)), imported  # the installed package, not this checkout

    written = init(venv, project, local_fleet, deploy_to, "--accept-fingerprints", "fingerprints.txt")
    assert "next: deployer check\n" in written.stdout  # ./deploy.yml is found without -i
    scanned = {tuple(line.split()) for line in (project / "deploy.known_hosts").read_text().splitlines()}
    fleet_keys = {tuple(line.split()) for line in Path(local_fleet.known_hosts).read_text().splitlines()}
    assert scanned == fleet_keys  # exactly the keys the hosts hold, each under its [address]:port

    checked = run(venv, project, "deployer", "check")  # ./deploy.yml, found without -i
    assert "check: OK: 4/4 host(s) ready to deploy" in checked.stdout
    for version in ("v1", "v2"):
        run(venv, project, "deployer", "build-sample", "--version", version, "--out", f"app-{version}.tar.gz")

    run(venv, project, "deployer", "deploy", "--artifact", "app-v1.tar.gz")
    assert versions(local_fleet, deploy_to) == {"v1"}
    run(venv, project, "deployer", "deploy", "--artifact", "app-v2.tar.gz")
    assert versions(local_fleet, deploy_to) == {"v2"}
    run(venv, project, "deployer", "rollback")
    assert versions(local_fleet, deploy_to) == {"v1"}
    run(venv, project, "deployer", "unpin")
    drill = run(venv, project, "deployer", "rollback-drill", "--artifact", "app-v2.tar.gz", "--junit", "drill.xml")
    assert "rollback-drill: PASS" in drill.stdout
    assert versions(local_fleet, deploy_to) == {"v2"}
    assert 'failures="0"' in (project / "drill.xml").read_text()


TASKS_PY = '''
from invoke import Collection, task

from deployer import api
from deployer.tasks import collection


@task
def ship(c, version):
    """Our own release task: build, then deploy through the Python API."""
    c.run(f"deployer build-sample --version {version} --out app-{version}.tar.gz", hide=True)
    report = api.deploy(c.config.deployer.inventory, f"app-{version}.tar.gz", message=f"ship {version}", quiet=True)
    print("shipped:", report.verdict())
    if not report.ok:
        raise SystemExit(report.exit_code)


ns = Collection(ship)
ns.add_collection(collection(), name="app")
'''


def test_project_tasks_py_adds_the_deploy_tasks(
    venv: Path, project: Path, local_fleet: LocalFleet, deploy_to: str
) -> None:
    init(venv, project, local_fleet, deploy_to, "--accept-fingerprints", "fingerprints.txt", "--out", "ops/prod.yml")
    (project / "tasks.py").write_text(TASKS_PY)
    (project / "invoke.yaml").write_text("deployer:\n  inventory: ops/prod.yml\n")
    invoke = (str(venv / "bin" / "python"), "-m", "invoke")

    listed = run(venv, project, *invoke, "--list").stdout
    for name in ("ship", "app.deploy", "app.rollback", "app.rollback-drill", "app.status", "app.check"):
        assert f"  {name} " in listed, listed

    shipped = run(venv, project, *invoke, "ship", "--version", "v1")
    assert "shipped: deploy" in shipped.stdout and "OK on 4/4 hosts" in shipped.stdout
    assert versions(local_fleet, deploy_to) == {"v1"}
    run(venv, project, *invoke, "ship", "--version", "v2")
    rolled = run(venv, project, *invoke, "app.rollback", "--message", "v2 broke checkout")  # from invoke.yaml
    assert versions(local_fleet, deploy_to) == {"v1"}
    # its hints name the tasks as this project spells them, and they work here as printed
    assert "`inv app.deploy` refuses until `inv app.unpin`" in rolled.stdout, rolled.stdout
    refused = run(venv, project, *invoke, "app.deploy", "--artifact", "app-v2.tar.gz", ok=False)
    assert refused.returncode == 3 and "run `inv app.unpin`" in refused.stdout + refused.stderr
    run(venv, project, *invoke, "app.unpin")
    assert "PINNED" not in run(venv, project, *invoke, "app.status").stdout
    history = HostView(local_fleet, "web1").sh("cat %s", f"{deploy_to}/.deployer/history.jsonl")
    assert "ship v2" in history and "v2 broke checkout" in history


def test_init_refuses_keys_nobody_confirmed(venv: Path, project: Path, local_fleet: LocalFleet, deploy_to: str) -> None:
    lines = (project / "fingerprints.txt").read_text().splitlines()
    (project / "three.txt").write_text("\n".join(lines[:3]) + "\n")  # web4's fingerprint is not among them
    refused = init(venv, project, local_fleet, deploy_to, "--accept-fingerprints", "three.txt", ok=False)
    assert refused.returncode == 2
    assert "host keys not in three.txt: web4 (SHA256:" in refused.stderr and "nothing was written" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (project / "deploy.yml").exists() and not (project / "deploy.known_hosts").exists()

    no_terminal = init(venv, project, local_fleet, deploy_to, ok=False)
    assert no_terminal.returncode == 2 and "--accept-fingerprints" in no_terminal.stderr
    assert "SHA256:" in no_terminal.stderr  # the offered keys were shown, for a person to compare
    assert not (project / "deploy.yml").exists()

    silent = run(
        venv,
        project,
        "deployer",
        "init",
        "--hosts",
        f"ghost={FLEET_SUBNET}.250:2222",
        "--identity-file",
        local_fleet.identity_file,
        "--accept-fingerprints",
        "fingerprints.txt",
        ok=False,
    )
    assert silent.returncode == 2 and f"no host key from ghost ({FLEET_SUBNET}.250:2222)" in silent.stderr
    assert not (project / "deploy.yml").exists()


def test_check_names_what_would_stop_a_deploy(
    venv: Path, project: Path, local_fleet: LocalFleet, deploy_to: str
) -> None:
    init(venv, project, local_fleet, "/cannot-be-made/app", "--accept-fingerprints", "fingerprints.txt")
    inventory = (project / "deploy.yml").read_text()
    (project / "deploy.yml").write_text(
        inventory.replace(f'address: "{FLEET_SUBNET}.4", port: 2222', f'address: "{FLEET_SUBNET}.4", port: 2299')
    )
    checked = run(venv, project, "deployer", "check", ok=False)
    assert checked.returncode == 1
    assert "web1: the deploy user cannot write the folder that would hold /cannot-be-made/app" in checked.stdout
    assert "web4" in checked.stdout and "FAILED" in checked.stdout
    assert "check: FAILED: 0/4 host(s) ready to deploy" in checked.stdout


def test_the_demo_from_any_folder_and_its_closing_commands_work_as_printed(venv: Path, tmp_path: Path) -> None:
    folder = tmp_path / "try-it"
    folder.mkdir()
    demo = run(venv, folder, "deployer", "demo")
    hint = demo.stdout[demo.stdout.rindex("Try:") :].splitlines()
    commands = [shlex.split(line) for line in hint if line.startswith("  ")]
    assert [command[:2] for command in commands] == [["deployer", "history"], ["deployer", "rollback"]] + [
        ["deployer", "fleet-down"]
    ], hint
    history = run(venv, folder, *commands[0])
    assert "drill" in history.stdout and "v3" in history.stdout  # the demo's releases carry their versions
    planned = run(venv, folder, *commands[1])
    assert "dry run" in (planned.stdout + planned.stderr).lower()
    down = run(venv, folder, *commands[2])
    assert "stopped 3 host(s)" in down.stdout
    for address in ("127.0.1.1", "127.0.1.2", "127.0.1.3"):  # its hosts are gone
        with pytest.raises(OSError):
            socket.create_connection((address, 2222), timeout=2).close()


def test_init_asks_a_person_to_confirm_each_fingerprint(
    venv: Path, project: Path, local_fleet: LocalFleet, deploy_to: str
) -> None:
    for answer, written in (("n", False), ("y", True)):
        code, transcript = run_on_a_terminal(
            [],
            answer,
            prompt=b"Trust these",
            cwd=project,
            argv=[
                str(venv / "bin" / "deployer"),
                "init",
                "--hosts",
                host_list(local_fleet),
                "--identity-file",
                local_fleet.identity_file,
                "--deploy-to",
                deploy_to,
            ],
        )
        assert "Trust these 4 key(s) of 4 host(s)?" in transcript
        for line in (project / "fingerprints.txt").read_text().splitlines():
            assert line.split()[1] in transcript  # each key's fingerprint was shown before the question
        assert (code == 0) == written and (project / "deploy.yml").exists() == written, transcript
