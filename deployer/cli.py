"""Glue between the invoke tasks and the operations: resolve inputs, render, map errors to exit codes.

User errors end as one clear line on stderr and an exit status (see `deployer.errors`), never a
traceback.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from invoke.exceptions import Exit

from deployer import api, operations, runlog
from deployer.errors import EXIT_HOSTS_FAILED, DeployerError, InputError, PlanRefused
from deployer.inventory import Inventory
from deployer.keyscan import key_fingerprint
from deployer.localfleet import LocalFleet
from deployer.locate import SAMPLE_APP, fleet_dir
from deployer.operations import Options
from deployer.plan.names import resolve_release
from deployer.release import check_release_id, pack_directory, sha256_file
from deployer.render import text
from deployer.render.annotations import print_annotations
from deployer.render.json import print_json, render_json
from deployer.render.junit import write_junit
from deployer.render.live import wants_live_view
from deployer.render.text import render_text
from deployer.report import OperationReport, Phase, Progress, shown
from deployer.userlands import parse_userlands

REPO_ROOT = Path(__file__).resolve().parent.parent  # the checkout, when running from one (vagrant/)


resolve_inventory = api.open_inventory


def guarded(
    action: Callable[[], int],
    task: str = "run",
    verbose: bool = False,
    as_json: bool = False,
    settled_exit: bool = False,
) -> None:
    """Run `action` with logging set up; turn its status and any error into invoke's Exit.

    The one place every error ends: a deployer error is its message and exit status; anything
    else (paramiko, invoke, OSError, a bug) is one line naming what failed and the run log's path
    (where its traceback is), exit 1. Never a traceback on the terminal. With `as_json`, stdout
    still gets one JSON document carrying the error and the exit status.
    """
    log_path = runlog.start(task, verbose)
    global _settle_before_verdict, _run_log
    _settle_before_verdict = settled_exit
    _run_log = log_path
    try:
        code = action()
    except Exit:
        raise
    except DeployerError as error:
        _fail(str(error), error.exit_code, as_json, log_path)
    except KeyboardInterrupt:
        _fail("interrupted: run `inv status` to see each host's state", 130, as_json, log_path)
    except Exception as error:  # noqa: BLE001 - the last boundary: one line and the run log, never a traceback
        logging.getLogger("deployer.crash").debug("unexpected error in %s", task, exc_info=True)
        where = f"; details in {log_path}" if log_path else ""
        _fail(f"unexpected error: {type(error).__name__}: {error}{where}", EXIT_HOSTS_FAILED, as_json, log_path)
    if code:
        raise Exit(code=code)


_settle_before_verdict = False  # set by guarded for the CLI process (never in-process callers)
_run_log: str | None = None  # this run's log file (guarded); its JSON report is written beside it


def _ignore_ctrl_c_from_now_on() -> None:
    """The operation is over and its verdict is about to be printed: a Ctrl-C from here on (the
    process winding down, threads and connections closing) can no longer change anything, so it
    must not change the exit status either (a Python killed by SIGINT would report 130 for a deploy
    that succeeded). Done before the verdict is printed, so no Ctrl-C sent after seeing it counts."""
    if not _settle_before_verdict or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _fail(message: str, code: int, as_json: bool, log_path: str | None) -> NoReturn:
    print(shown(f"error: {message}"), file=sys.stderr)
    if as_json:
        _print_json({"ok": False, "error": message, "exit_code": code, "run_log": log_path})
    raise Exit(code=code)


def _emit(report: OperationReport, as_json: bool, progress: Progress | None = None) -> int:
    _ignore_ctrl_c_from_now_on()
    if progress is not None:
        report.timeline = progress.timeline.data()
    _keep_report(report)
    print_annotations(report, sys.stderr if as_json else sys.stdout)  # stdout stays one JSON document
    if as_json:
        render_json(report)
    elif wants_live_view(sys.stdout):
        from deployer.render.live import render_rich  # noqa: PLC0415 - rich only for terminals

        render_rich(report)
    else:
        render_text(report)
    return report.exit_code


def _keep_report(report: OperationReport) -> None:
    """Every run's JSON report beside its log (`.deployer-runs/...json`): `deployer report` reads it."""
    if not _run_log:
        return
    path = os.path.splitext(_run_log)[0] + ".json"
    try:
        with open(path, "w", encoding="utf-8") as handle:
            render_json(report, handle)
    except OSError as error:
        logging.getLogger("deployer.cli").warning("cannot keep the JSON report in %s: %s", path, error)
        return
    logging.getLogger("deployer.cli").info("JSON report: %s", path)


@contextmanager
def _progress(inventory: Inventory) -> Iterator[Progress]:
    """The live per-host view on a terminal, plain lines otherwise; closed however the run ends."""
    if wants_live_view():
        from deployer.render.live import LiveProgress  # noqa: PLC0415 - rich only for terminals

        progress: Progress = LiveProgress([host.name for host in inventory.hosts])
    else:
        progress = Progress()
    try:
        yield progress
    finally:
        progress.close()


def deploy(
    inventory: str | None,
    artifact: str | None,
    release: str | None,
    options: Options,
    as_json: bool,
    git: str | None = None,
    repo: str | None = None,
) -> int:
    chosen = resolve_inventory(inventory, options, runs_hooks=True)
    with api.artifact_source(artifact, git, repo, options) as (source, options), _progress(chosen) as progress:
        report = operations.deploy(chosen, source, release, options, progress)
    return _emit(report, as_json, progress)


def rollback(inventory: str | None, to: str | None, options: Options, as_json: bool) -> int:
    chosen = resolve_inventory(inventory, options, runs_hooks=True)
    with _progress(chosen) as progress:
        report = operations.rollback(chosen, to, options, progress)
    return _emit(report, as_json, progress)


def drill(
    inventory: str | None,
    artifact: str | None,
    options: Options,
    as_json: bool,
    junit: str | None = None,
    verify: bool = True,
    git: str | None = None,
    repo: str | None = None,
) -> int:
    chosen = resolve_inventory(inventory, options, runs_hooks=True)
    check = None
    if verify:
        from deployer.verify import verify as run_checks  # noqa: PLC0415 - only with --verify

        def check(release: str) -> tuple[bool, str]:
            result = run_checks(chosen, release, lock_free=False, quiet=True)
            lines = result.output.strip().splitlines()
            return result.ok, "; ".join(result.failed[:5]) or (lines[-1] if lines else "no output")

    try:
        with api.artifact_source(artifact, git, repo, options) as (source, options), _progress(chosen) as progress:
            report = operations.drill(chosen, source, options, progress=progress, check=check)
    except PlanRefused as refused:
        if junit:  # CI still gets a report saying why the drill did not run
            write_junit(
                OperationReport("rollback-drill", None, phases=[Phase("baseline", 0.0, False, str(refused))]), junit
            )
        raise
    report.timeline = progress.timeline.data()
    if junit:
        write_junit(report, junit)
    return _emit(report, as_json)


def _out(text: str, **kwargs: Any) -> None:
    """print(), with secret values replaced by ***: host-provided text (hook output, messages) may hold them."""
    print(shown(text), **kwargs)


def _print_json(data: Any) -> None:
    print_json(data)


def status(inventory: str | None, options: Options, as_json: bool) -> int:
    view = operations.read_fleet(resolve_inventory(inventory, options), options)
    data = operations.status_data(view)
    code = operations.status_exit_code(view)
    if as_json:
        _print_json(data)
        return code
    text.status(data)
    return code


def history(inventory: str | None, limit: int, options: Options, as_json: bool) -> int:
    view = operations.read_fleet(resolve_inventory(inventory, options), options, history=limit)
    entries = operations.history_entries(view, limit)
    if as_json:
        _print_json({"history": entries, "unreachable": view.unreachable})
    else:
        text.history(entries, len(view.inventory.hosts))
    return _warn_unreachable(view.unreachable, "; its history is not shown")


def check(inventory: str | None, options: Options, as_json: bool) -> int:
    """Load the inventory (every key checked) and read every host: could a deploy run there?"""
    view = operations.read_fleet(resolve_inventory(inventory, options), options)
    rows = operations.check_rows(view)
    ok = all(row["ok"] for row in rows)
    if as_json:
        _print_json({"ok": ok, "inventory": view.inventory.path, "hosts": rows})
    else:
        text.check_table(rows)
    return 0 if ok else 1


def init(
    hosts: str | None,
    ssh_config: str | None,
    ansible: str | None,
    out: str,
    user: str | None,
    deploy_to: str,
    identity_file: str | None,
    accept_fingerprints: str | None,
    force: bool,
    as_json: bool,
) -> int:
    """Write a first inventory and known_hosts: hosts from a list, an ssh_config or an Ansible
    inventory; their keys from ssh-keyscan, kept only once their fingerprints are confirmed."""
    from deployer import init as first  # noqa: PLC0415 - only this task needs it

    targets, source = first.gather_targets(hosts, ssh_config, ansible)
    if not force:
        first.refuse_existing(out)
    keys = first.scan_keys(targets)
    shown_lines = first.fingerprint_lines(targets, keys)
    if accept_fingerprints:
        keys = first.keep_accepted(keys, first.accepted_fingerprints(accept_fingerprints), accept_fingerprints)
    else:
        print(
            "Host keys offered (compare each with `ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` on the host):",
            file=sys.stderr,
        )
        for line in shown_lines:
            print(f"  {shown(line)}", file=sys.stderr)
        if not sys.stdin.isatty():
            raise InputError(
                "host keys not confirmed: stdin is not a terminal; pass --accept-fingerprints FILE "
                "(the fingerprints, as `ssh-keygen -lf` prints them); nothing was written"
            )
        answer = input(f"Trust these {len(shown_lines)} key(s) of {len(targets)} host(s)? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            raise InputError("host keys not confirmed; nothing was written")
    written = first.write(
        targets, keys, out, user=user, deploy_to=deploy_to, identity_file=identity_file, source=source, force=force
    )
    if as_json:
        _print_json(
            {
                "inventory": written.inventory,
                "known_hosts": written.known_hosts,
                "hosts": [{"name": t.name, "address": t.address, "port": t.port} for t in targets],
                "fingerprints": {name: [key_fingerprint(line) for line in lines] for name, lines in keys.items()},
            }
        )
    else:
        program = shlex.quote(os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "deployer")
        print(f"wrote {written.inventory} ({len(targets)} host(s)) and {written.known_hosts}")
        print(f"next: {program} check -i {shlex.quote(os.path.relpath(written.inventory))}")
    return 0


def sign(
    artifact: str,
    key: str,
    namespace: str,
    out: str | None,
    as_json: bool = False,
    git: str | None = None,
    repo: str | None = None,
) -> int:
    """Sign ARTIFACT; with `git`, first build that ref of `repo` into ARTIFACT (the same reproducible
    tarball `deploy --git` builds, so its signature verifies for either)."""
    from deployer import signing  # noqa: PLC0415 - only this task needs it
    from deployer.revision import pack_git  # noqa: PLC0415

    built = None
    if git:
        if not artifact.endswith((".tar.gz", ".tgz")):
            raise InputError(f"--git: {artifact} is where the built release goes; name it .tar.gz")
        if os.path.exists(artifact):
            raise InputError(f"--git: {artifact} exists already; the built release is never written over a file")
        built = pack_git(repo or ".", git, artifact)
    written = signing.sign(artifact, key, namespace, out)
    if as_json:
        commit = {"commit": built.commit} if built is not None else {}
        _print_json({"artifact": artifact, "signature": written, "namespace": namespace, **commit})
    else:
        print(written)
    return 0


def report_page(path: str, html_out: str | None, as_json: bool = False) -> int:
    """Write a run's JSON report as one HTML page (`latest`: the newest report kept beside the run logs)."""
    from deployer.render.html import write_html  # noqa: PLC0415 - only this task needs it

    if path == "latest" and not os.path.exists(path):
        kept = sorted(Path(runlog.folder()).glob("*.json"))
        if not kept:
            raise InputError(f"no run reports in {runlog.folder()}: name one (a --json output)")
        path = str(kept[-1])
    out = html_out or os.path.splitext(path)[0] + ".html"
    write_html(path, out)
    if as_json:
        _print_json({"report": path, "html": out})
    else:
        print(out)
    return 0


def _warn_unreachable(unreachable: dict[str, str], detail: str = "") -> int:
    """Name each host that could not be read (stderr); exit 1 when any could not."""
    for name, reason in sorted(unreachable.items()):
        _out(f"warning: {name} unreachable ({reason}){detail}", file=sys.stderr)
    return 1 if unreachable else 0


def releases(inventory: str | None, options: Options, as_json: bool) -> int:
    view = operations.read_fleet(resolve_inventory(inventory, options), options)
    rows = operations.releases_table(view)
    if as_json:
        _print_json({"releases": rows, "unreachable": view.unreachable})
        return 1 if view.unreachable else 0
    text.releases(rows, len(view.states))
    return _warn_unreachable(view.unreachable)


def lock_status(inventory: str | None, options: Options, as_json: bool) -> int:
    view = operations.read_fleet(resolve_inventory(inventory, options), options)
    data = operations.status_data(view)
    locks = {h["host"]: h["lock"] for h in data["hosts"] if h.get("lock")}
    if as_json:
        _print_json({"locks": locks, "unreachable": view.unreachable})
        return 1 if locks else 0
    text.lock_status(locks)
    _warn_unreachable(view.unreachable)
    return 1 if locks else 0


def unlock(inventory: str | None, yes: bool, options: Options, as_json: bool) -> int:
    def confirm(question: str) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise InputError(f"{question} Not confirmed: stdin is not a terminal; pass --yes to remove it")
        answer = input(f"{question} [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    report = operations.unlock(resolve_inventory(inventory, options), confirm, options)
    return _emit(report, as_json)


def unpin(inventory: str | None, options: Options, as_json: bool) -> int:
    return _emit(operations.unpin(resolve_inventory(inventory, options), options), as_json)


def place_signers(inventory: str | None, options: Options, as_json: bool) -> int:
    return _emit(operations.place_signers(resolve_inventory(inventory, options), options), as_json)


def prune(inventory: str | None, options: Options, as_json: bool) -> int:
    return _emit(operations.prune(resolve_inventory(inventory, options), options), as_json)


def fleet_up(
    hosts: int, state_dir: str | None, subnet: str, port: int, userland: str = "gnu", as_json: bool = False
) -> int:
    fleet = LocalFleet(fleet_dir(state_dir))
    started = fleet.up(hosts, subnet=subnet, port=port, userlands=parse_userlands(userland))
    if as_json:
        _print_json(
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


def fleet_down(state_dir: str | None, as_json: bool = False) -> int:
    stopped = LocalFleet(fleet_dir(state_dir)).down()
    if as_json:
        _print_json({"stopped": stopped})
    else:
        print(f"stopped {len(stopped)} host(s){': ' + ', '.join(stopped) if stopped else ''}")
    return 0


def vm_fleet_up(vms: int, memory: int, out: str, as_json: bool = False) -> int:
    from deployer import vmfleet  # noqa: PLC0415 - only these tasks need it

    _vagrant_folder()
    _check_out_folder(out)  # before minutes of starting VMs, not after
    vmfleet.up(vmfleet.VmFleetSettings(vms, memory), _vagrant_log("vm-fleet-up"))
    return vagrant_inventory(None, out, as_json)


def vm_fleet_down(as_json: bool = False) -> int:
    from deployer import vmfleet  # noqa: PLC0415 - only these tasks need it

    vmfleet.down(_vagrant_log("vm-fleet-down"))
    if as_json:
        _print_json({"down": True})
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


def verify(
    inventory: str | None, release: str | None, junit: str | None, options: Options, as_json: bool = False
) -> int:
    """Check every host with the testinfra suite; the release defaults to the one the fleet is on."""
    from deployer.verify import verify as run_checks  # noqa: PLC0415 - only this task needs it

    chosen = resolve_inventory(inventory, options)
    if release is None:
        view = operations.read_fleet(chosen, options)
        currents = sorted({state.current or "(none)" for state in view.states.values()})
        if view.unreachable or len(currents) != 1 or currents == ["(none)"]:
            split = operations.status_data(view)["split"]
            raise InputError(
                f"cannot tell which release to expect (hosts: {split or 'none'}, unreachable: "
                f"{', '.join(sorted(view.unreachable)) or 'none'}); pass --release ID"
            )
        release = currents[0]
    else:  # a release id, a version label or a commit prefix, as the fleet records them
        check_release_id(release)
        named, why = resolve_release(release, operations.read_fleet(chosen, options).states)
        if named is None:
            raise InputError(why)
        release = named
    result = run_checks(chosen, release, junit, quiet=as_json)
    verdict = f"verify {release}: {'PASS' if result.ok else 'FAIL'} on {len(chosen.hosts)} host(s)"
    if as_json:
        _print_json({"release": release, "ok": result.ok, "verdict": verdict, "failed": result.failed})
    else:
        print(verdict)
    return 0 if result.ok else 1


def vagrant_inventory(ssh_config: str | None, out: str, as_json: bool = False) -> int:
    from deployer.vagrant import vagrant_inventory as write  # noqa: PLC0415 - only this task needs it

    _check_out_folder(out)
    hosts, checked = write(ssh_config, out, _vagrant_folder())
    known_hosts = f"{os.path.splitext(out)[0]}.known_hosts"
    first_use = [h.alias for h in hosts if h.alias not in checked]
    if as_json:
        _print_json(
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


def print_built_sample(version: str, out: str, as_json: bool = False) -> int:
    path = build_sample(version, out)
    if as_json:
        _print_json({"artifact": path, "version": version})
    else:
        print(path)
    return 0


def build_sample(version: str, out: str) -> str:
    """Pack the sample app with VERSION set to `version` into the .tar.gz `out`."""
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


DEMO_SETTINGS = """\
# The sample app on the local fleet (written by the demo). Relative paths are relative to this file.
validate: "sh bin/check"
# After each host's switch: retried until it passes; a failing batch is switched back automatically.
health_check: {command: "sh bin/check", timeout: 5, retries: 2, interval: 1}
# Data that survives deploys and rollbacks: <deploy_to>/shared/storage, linked into every release.
shared: ["storage/"]
keep_releases: 5
"""


def demo() -> int:
    """The main job on a 3-host local fleet in ./.fleet: v1, v2, rollback, pin, drill, status."""
    fleet = LocalFleet(fleet_dir())
    print(f"== starting a local fleet of 3 sshd hosts in {fleet.state_dir}")
    for host in fleet.up(3):
        shutil.rmtree(os.path.join(host.srv, "app"), ignore_errors=True)  # each demo starts from empty hosts
    artifacts = os.path.join(fleet.state_dir, "artifacts")
    v1 = build_sample("v1", os.path.join(artifacts, "app-v1.tar.gz"))
    v2 = build_sample("v2", os.path.join(artifacts, "app-v2.tar.gz"))
    v3 = build_sample("v3", os.path.join(artifacts, "app-v3.tar.gz"))
    inventory = os.path.join(fleet.state_dir, "demo.yml")
    Path(inventory).write_text(Path(fleet.inventory_path).read_text() + DEMO_SETTINGS)
    options = Options()
    steps: list[tuple[str, Callable[[], int]]] = [
        ("deploy v1", lambda: deploy(inventory, v1, None, options, False)),
        ("deploy v2", lambda: deploy(inventory, v2, None, options, False)),
        ("rollback (back to v1; pins the fleet and marks v2 bad)", lambda: rollback(inventory, None, options, False)),
        ("deploy v3 (refused: the fleet is pinned)", lambda: 0 if deploy(inventory, v3, None, options, False) else 1),
        ("unpin (the fix is ready)", lambda: unpin(inventory, options, False)),
        ("rollback drill with v3", lambda: drill(inventory, v3, options, False)),
        ("releases", lambda: releases(inventory, options, False)),
        ("history", lambda: history(inventory, 8, options, False)),
        ("status", lambda: status(inventory, options, False)),
    ]
    for title, step in steps:
        print(f"\n== {title}")
        code = step()
        if code:
            print(f"demo stopped: step '{title}' exited {code}", file=sys.stderr)
            return code
    program = shlex.quote(sys.argv[0] if sys.argv and sys.argv[0] else "deployer")
    print(
        f"\nEach host's /srv is under {fleet.state_dir}/hosts/*/srv. Try:\n"
        f"  {program} history -i {shlex.quote(inventory)}\n"
        f"and stop the fleet with:\n  {program} fleet-down --state-dir {shlex.quote(fleet.state_dir)}"
    )
    return 0
