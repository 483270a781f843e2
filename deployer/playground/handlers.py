"""The commands for fleets to try the tool on: the demo, the local fleet of sshd hosts, the Vagrant VM
fleet, and the sample app they deploy. Each handler takes the command's checked `Values`."""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from deployer import cli, runlog
from deployer.arguments import Values
from deployer.commands import values
from deployer.errors import InputError
from deployer.invocation import command
from deployer.locate import SAMPLE_APP, fleet_dir
from deployer.playground.localfleet import LocalFleet
from deployer.playground.userlands import parse_userlands
from deployer.release import pack_directory, sha256_file
from deployer.render.json import print_json

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout, when running from one (vagrant/)


def fleet_up(given: Values) -> int:
    fleet = LocalFleet(fleet_dir(given.state_dir))
    started = fleet.up(given.count, subnet=given.subnet, port=given.port, userlands=parse_userlands(given.userland))
    if given.json:
        print_json(
            {
                "hosts": [
                    {"name": h.name, "address": h.address, "port": h.port, "srv": h.srv, "userland": h.userland}
                    for h in started
                ],
                "inventory": fleet.inventory_path,
                "known_hosts": fleet.known_hosts,
                "identity_file": fleet.identity_file,
            }
        )
        return 0
    for host in started:
        print(f"  {host.name}  {host.address}:{host.port}  {host.userland:<12}  /srv -> {host.srv}")
    print(f"{len(started)} host(s) up; inventory: {fleet.inventory_path}")
    return 0


def fleet_down(given: Values) -> int:
    stopped = LocalFleet(fleet_dir(given.state_dir)).down()
    if given.json:
        print_json({"stopped": stopped})
    else:
        print(f"stopped {len(stopped)} host(s){': ' + ', '.join(stopped) if stopped else ''}")
    return 0


def vm_fleet_up(given: Values) -> int:
    from deployer.playground import vmfleet  # noqa: PLC0415 - only these commands need it

    _vagrant_folder()
    _check_out_folder(given.out)  # before minutes of starting VMs, not after
    vmfleet.up(vmfleet.VmFleetSettings(given.count, given.memory), _vagrant_log("vm-fleet-up"))
    return _write_vagrant_inventory(None, given.out, given.json)


def vm_fleet_down(given: Values) -> int:
    from deployer.playground import vmfleet  # noqa: PLC0415 - only these commands need it

    vmfleet.down(_vagrant_log("vm-fleet-down"))
    if given.json:
        print_json({"down": True})
    else:
        print("VM fleet destroyed; libvirt daemons started by vm-fleet-up stopped")
    return 0


def _vagrant_folder() -> str:
    """The checkout's `vagrant/` (the VM fleet is not package data: it is a development fleet)."""
    folder = REPO_ROOT / "vagrant"
    if not (folder / "Vagrantfile").is_file():
        raise InputError(f"the VM fleet works from a checkout of the deployer repository ({folder} is missing)")
    return str(folder)


def _check_out_folder(out: str) -> None:
    """The inventory (and its known_hosts beside it) go into a folder that must exist."""
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise InputError(f"--out {out}: the folder {folder} does not exist")


def _vagrant_log(task: str) -> Path:
    """Where vagrant's own output goes: next to the run logs."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return Path(runlog.folder()) / f"{stamp}-{task}-vagrant.log"


def vagrant_inventory(given: Values) -> int:
    return _write_vagrant_inventory(given.ssh_config, given.out, given.json)


def _write_vagrant_inventory(ssh_config: str | None, out: str, as_json: bool) -> int:
    from deployer.playground.vagrant import vagrant_inventory as write  # noqa: PLC0415 - only these commands need it

    _check_out_folder(out)
    hosts, checked = write(ssh_config, out, _vagrant_folder())
    known_hosts = f"{os.path.splitext(out)[0]}.known_hosts"
    first_use = [h.alias for h in hosts if h.alias not in checked]
    if as_json:
        print_json(
            {
                "hosts": [h.alias for h in hosts],
                "inventory": out,
                "known_hosts": known_hosts,
                "keys_checked_on_console": checked,
                "keys_taken_on_first_use": first_use,
            }
        )
    else:
        print(f"{len(hosts)} host(s): {', '.join(h.alias for h in hosts)}; inventory: {out}")
    if checked:
        print(f"host keys of {', '.join(checked)} match what each VM printed on its serial console", file=sys.stderr)
    if first_use:
        print(
            f"host keys of {', '.join(first_use)} were taken on first use (ssh-keyscan) into "
            f"{known_hosts}: check them if this network is not yours",
            file=sys.stderr,
        )
    return 0


def build_sample_command(given: Values) -> int:
    path = build_sample(given.version, given.out, broken=given.broken)
    if given.json:
        print_json({"artifact": path, "version": given.version})
    else:
        print(path)
    return 0


def build_sample(version: str, out: str, broken: bool = False) -> str:
    """Pack the sample app with VERSION set to `version` into the .tar.gz `out`; `broken`: a release
    whose /health passes while every other request fails (what a watch after the switch is for)."""
    if not version or any(ch in version for ch in "\n\0/"):
        raise InputError(f"sample version {version!r} is not usable")
    if not SAMPLE_APP.is_dir():  # package data: only missing from a broken installation
        raise InputError(f"the sample app is missing from this installation ({SAMPLE_APP}): reinstall deployer")
    with tempfile.TemporaryDirectory(prefix="deployer-sample-") as workdir:
        tree = os.path.join(workdir, "app")
        shutil.copytree(SAMPLE_APP, tree, ignore=shutil.ignore_patterns("__pycache__"))
        for program in Path(tree, "bin").iterdir():  # wheels need not keep modes: the app's programs run
            program.chmod(0o755)
        Path(tree, "VERSION").write_text(version + "\n")
        if broken:
            Path(tree, "BROKEN").write_text("every request but /health fails (built with build-sample --broken)\n")
        write_manifest(tree)
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        pack_directory(tree, out)
    return out


def write_manifest(tree: str) -> None:
    """`MANIFEST.sha256` in `tree`: every other file's sha256, as `sha256sum -c` reads it (sorted paths)."""
    lines = []
    for root, dirs, files in os.walk(tree):
        dirs.sort()
        for name in sorted(files):
            path = os.path.relpath(os.path.join(root, name), tree)
            if path != "MANIFEST.sha256":
                lines.append(f"{sha256_file(os.path.join(tree, path))[0]}  {path}\n")
    Path(tree, "MANIFEST.sha256").write_text("".join(sorted(lines, key=lambda line: line[66:])))


VERSIONS = ("v1", "v2", "v3")
DEMO_SETTINGS = """\
# The sample app on the local fleet (written by the demo). Relative paths are relative to this file.
validate: "sh bin/check"
# After each host's switch: retried until it passes; a failing batch is switched back automatically.
health_check: {command: "sh bin/check", timeout: 5, retries: 2, interval: 1}
# Data that survives deploys and rollbacks: <deploy_to>/shared/storage, linked into every release.
shared: ["storage/"]
keep_releases: 5
"""


def demo(given: Values) -> int:
    """The main job on a 3-host local fleet in ./.fleet: v1, v2, rollback, pin, drill, status."""
    fleet = LocalFleet(fleet_dir())
    print(f"== starting a local fleet of 3 sshd hosts in {fleet.state_dir}")
    for host in fleet.up(3):
        shutil.rmtree(os.path.join(host.srv, "app"), ignore_errors=True)  # each demo starts from empty hosts
    artifacts = os.path.join(fleet.state_dir, "artifacts")
    built = {version: build_sample(version, os.path.join(artifacts, f"app-{version}.tar.gz")) for version in VERSIONS}
    inventory = os.path.join(fleet.state_dir, "demo.yml")
    Path(inventory).write_text(Path(fleet.inventory_path).read_text() + DEMO_SETTINGS)

    def run(name: str, **flags: object) -> Callable[[], int]:
        return lambda: cli.HANDLERS[name](values(name, {"inventory": inventory, **flags}))

    def ship(name: str, version: str) -> Callable[[], int]:
        return run(name, artifact=built[version], version=version)

    refused = ship("deploy", "v3")
    steps: list[tuple[str, Callable[[], int]]] = [
        ("deploy v1", ship("deploy", "v1")),
        ("deploy v2", ship("deploy", "v2")),
        ("rollback (back to v1; pins the fleet and marks v2 bad)", run("rollback", message="demo: v2 is broken")),
        ("deploy v3 (refused: the fleet is pinned)", lambda: 0 if refused() else 1),
        ("unpin (the fix is ready)", run("unpin")),
        ("rollback drill with v3", run("rollback-drill", artifact=built["v3"], version="v3", verify=_can_verify())),
        ("releases", run("releases")),
        ("history", run("history", limit="8")),
        ("status", run("status")),
    ]
    for title, step in steps:
        print(f"\n== {title}")
        code = step()
        if code:
            print(f"demo stopped: step '{title}' exited {code}", file=sys.stderr)
            return code
    relative = shlex.quote(os.path.relpath(inventory))
    state_dir = shlex.quote(os.path.relpath(fleet.state_dir))
    print(
        f"\nEach host's /srv is under {fleet.state_dir}/hosts/*/srv. Try:\n"
        f"  {command('history -i ' + relative)}\n"
        f"  {command('rollback -n -i ' + relative)}\n"
        f"and stop the fleet with:\n  {command('fleet-down --state-dir ' + state_dir)}"
    )
    return 0


def _can_verify() -> bool:
    """The drill's testinfra checks need the `verify` extra; without it the demo drills without them."""
    found = importlib.util.find_spec("testinfra") is not None and importlib.util.find_spec("pytest") is not None
    if not found:
        print("(the drill runs without its testinfra checks: pip install 'deployer[verify]' to add them)")
    return found


HANDLERS: dict[str, Callable[[Values], int]] = {
    "demo": demo,
    "fleet-up": fleet_up,
    "fleet-down": fleet_down,
    "build-sample": build_sample_command,
    "vm-fleet-up": vm_fleet_up,
    "vm-fleet-down": vm_fleet_down,
    "vagrant-inventory": vagrant_inventory,
}
