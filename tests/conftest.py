"""Shared fixtures: the local fleet of real sshd hosts, inventories for it, sample artifacts,
and independent views of each host (testinfra over the OpenSSH client, not the tool's code)."""

from __future__ import annotations

import os
import pty
import re
import select
import shlex
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testinfra.backend.base import CommandResult
from testinfra.backend.ssh import SshBackend
from testinfra.host import Host

from deployer.playground.handlers import build_sample
from deployer.playground.localfleet import LocalFleet
from deployer.playground.userlands import MIXED

REPO = Path(__file__).resolve().parent.parent
FLEET_SIZE = 4
# One host of each kind (deployer/userlands.py): web1 GNU/dash, web2 BusyBox, web3 posix-strict
# (the FreeBSD/macOS class), web4 GNU with tcsh as the deploy user's login shell.
FLEET_USERLANDS = MIXED


def _fleet_subnet() -> str:
    """127.0.2: apart from `deployer fleet-up`'s 127.0.1, so tests and a demo can coexist; another
    checkout's run beside this one takes another (DEPLOYER_TEST_SUBNET=127.0.9). Each pytest-xdist
    worker (gw0, gw1, ...) runs a fleet of its own, ten subnets apart (127.0.2, 127.0.12, ...)."""
    first, second, third = os.environ.get("DEPLOYER_TEST_SUBNET", "127.0.2").split(".")
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    return f"{first}.{second}.{int(third) + 10 * worker}"


FLEET_SUBNET = _fleet_subnet()


@pytest.fixture(scope="session")
def local_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    if os.geteuid() != 0:
        pytest.fail("integration tests start real sshd hosts and need root (see README)")
    fleet = LocalFleet(str(tmp_path_factory.mktemp("fleet")))
    fleet.up(FLEET_SIZE, subnet=FLEET_SUBNET, port=2222, userlands=FLEET_USERLANDS)
    yield fleet
    fleet.down()


@pytest.fixture
def deploy_to(request: pytest.FixtureRequest) -> str:
    """A deploy folder of its own for each test, so tests share the fleet but not its state."""
    return "/srv/" + re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)[:80]


@pytest.fixture
def make_inventory(local_fleet: LocalFleet, tmp_path: Path, deploy_to: str) -> Callable[..., str]:
    def make(
        hosts: list[str] | None = None,
        deploy_to: str = deploy_to,
        validate: str = "",
        known_hosts: str | None = None,
        extra: str = "",
        timeouts: str = "{connect: 5, command: 30, stage: 120}",
        groups: dict[str, list[str]] | None = None,
    ) -> str:
        chosen = [h for h in local_fleet.hosts() if hosts is None or h.name in hosts]
        lines = [
            f"deploy_to: {yaml_quote(deploy_to)}",
            "user: deploy",
            "ssh:",
            f"  identity_file: {yaml_quote(local_fleet.identity_file)}",
            f"  known_hosts: {yaml_quote(known_hosts or local_fleet.known_hosts)}",
            f"timeouts: {timeouts}",
        ]
        if validate:
            lines.append(f"validate: {yaml_quote(validate)}")
        lines.append("hosts:")
        for h in chosen:
            member_of = (groups or {}).get(h.name)
            extra_keys = f", groups: [{', '.join(member_of)}]" if member_of else ""
            lines.append(f"  {h.name}: {{address: {h.address}, port: {h.port}{extra_keys}}}")
        path = tmp_path / f"inventory-{len(list(tmp_path.glob('inventory-*')))}.yml"
        path.write_text("\n".join(lines) + "\n" + extra)
        return str(path)

    return make


def yaml_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def fleet_fingerprints(fleet: LocalFleet) -> str:
    """Each host's key fingerprint as `ssh-keygen -lf` prints it: known out of band (from the host's
    own key file), as a CI job's --accept-fingerprints file would hold them."""
    return "".join(
        subprocess.run(
            ["ssh-keygen", "-lf", os.path.join(host.root, "ssh_host_ed25519_key.pub")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for host in fleet.hosts()
    )


@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv outside the repository with the project pip-installed from its path (as a
    wheel, not editable): what a user gets. Its dependencies are borrowed from the test's own
    environment (a .pth line), so no package index is needed."""
    folder = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    site = next((folder / "lib").glob("python3*/site-packages"))
    (site / "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(folder / "bin" / "pip"), "install", "-q", "--no-deps", "--disable-pip-version-check", str(REPO)],
        check=True,
        capture_output=True,
    )
    return folder


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("artifacts")
    return {version: build_sample(version, str(folder / f"app-{version}.tar.gz")) for version in ("v1", "v2", "v3")}


class PosixShellSsh(SshBackend):
    """testinfra over OpenSSH with every command run by POSIX sh, whatever the deploy user's login
    shell (the fleet's web4 has tcsh, where `2>/dev/null`, `for` and `$(...)` mean other things)."""

    def run(self, command: str, *args: str, **kwargs: Any) -> CommandResult:
        return self.run_ssh("sh -c " + shlex.quote(self.get_command(command, *args)))


class HostView:
    """One host seen through the OpenSSH client (testinfra), independently of the deployer."""

    def __init__(self, fleet: LocalFleet, name: str) -> None:
        host = fleet.host(name)
        self.name = name
        self.host = Host(
            PosixShellSsh(
                f"deploy@{host.address}:{host.port}",
                ssh_identity_file=fleet.identity_file,
                ssh_extra_args=f"-o UserKnownHostsFile={fleet.known_hosts} -o StrictHostKeyChecking=yes "
                "-o IdentitiesOnly=yes -o BatchMode=yes",
                controlpersist=0,
            )
        )

    def sh(self, command: str, *args: str) -> str:
        return self.host.check_output(command, *args)

    def current_link(self, deploy_to: str) -> str | None:
        result = self.host.run("readlink %s", f"{deploy_to}/current")
        return result.stdout.strip() if result.rc == 0 else None

    def current_release(self, deploy_to: str) -> str | None:
        link = self.current_link(deploy_to)
        return link.split("/", 1)[1] if link and link.startswith("releases/") else link

    def version(self, deploy_to: str) -> str:
        return self.sh("cat %s", f"{deploy_to}/current/VERSION")

    def previous_version(self, deploy_to: str, release: str) -> str:
        return self.sh("cat %s", f"{deploy_to}/releases/{release}/previousVersion")

    def releases(self, deploy_to: str) -> list[str]:
        out = self.host.run("ls -1 %s", f"{deploy_to}/releases")
        return sorted(out.stdout.split()) if out.rc == 0 else []

    def hostname(self) -> str:
        return self.sh("hostname")


@pytest.fixture(scope="session")
def views(local_fleet: LocalFleet) -> dict[str, HostView]:
    return {host.name: HostView(local_fleet, host.name) for host in local_fleet.hosts()}


def in_host_namespace(fleet: LocalFleet, name: str, command: str) -> None:
    """Run `command` as root in host `name`'s own mount namespace (what it mounts there, only that
    host sees: the other fleets' hosts share this machine's folders), with the machine's own sh and
    tools: the host's /usr/bin may hold only BusyBox or posix-strict tools."""
    machine = f"/proc/{os.getpid()}/root"
    tools = {"PATH": f"{machine}/usr/sbin:{machine}/usr/bin"}
    subprocess.run(
        ["nsenter", "-t", str(fleet.pid(name)), "-m", f"{machine}/bin/sh", "-c", command],
        env=tools,
        check=True,
        timeout=30,
    )


def run_inv(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO,
        stdin=subprocess.DEVNULL,  # never a terminal: prompts must not wait for a person
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def run_on_a_terminal(
    args: list[str],
    answer: str = "",
    timeout: float = 120,
    env: dict[str, str] | None = None,
    prompt: bytes = b"sudo password",
    argv: list[str] | None = None,
    cwd: Path = REPO,
) -> tuple[int, str]:
    """Run the CLI (`inv ARGS`, or the command `argv`) with a pseudo-terminal as its terminal; type
    `answer` each time `prompt` appears."""
    command = argv or [sys.executable, "-m", "invoke", *args]
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(cwd)
        os.execve(command[0], command, {**os.environ, **(env or {})})
    transcript = b""
    answered = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        transcript += chunk
        if transcript.count(prompt) > answered:
            answered += 1
            os.write(fd, answer.encode() + b"\n")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), transcript.decode(errors="replace")


def inv_process(*args: str) -> subprocess.Popen[str]:
    """The CLI in the background, as an operator's terminal runs it: Ctrl-C (SIGINT) is not ignored.

    A test run started in the background by a non-interactive shell (CI) inherits SIGINT ignored,
    and Python then never raises KeyboardInterrupt: the child's SIGINT is reset to the default."""
    return subprocess.Popen(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def lock_folders(views, deploy_to):
    return {name: view.host.run("test -d %s", f"{deploy_to}/.deployer/lock").rc == 0 for name, view in views.items()}


def wait_for_lock(views, deploy_to, process):
    deadline = time.monotonic() + 60
    while not all(lock_folders(views, deploy_to).values()):
        assert process.poll() is None, f"the operation ended before it was seen locking: {process.communicate()}"
        assert time.monotonic() < deadline, "the operation never took the lock"
        time.sleep(0.05)


def git(repo, *args):
    env = {"GIT_AUTHOR_NAME": "Ana", "GIT_AUTHOR_EMAIL": "ana@example.org", "GIT_COMMITTER_NAME": "Ana"}
    env |= {"GIT_COMMITTER_EMAIL": "ana@example.org", "PATH": "/usr/bin:/bin", "HOME": str(repo)}
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=env).stdout
