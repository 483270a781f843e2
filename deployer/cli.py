"""What each fleet command does once its flags are checked: resolve the inventory and the artifact,
run the operation, render its report in the form asked for, return the exit status.

Parsing lives in the front ends (deployer/console.py, deployer/tasks.py, both from deployer/commands.py);
errors end in deployer/exits.py; rendering in deployer/render/. Each handler takes `Values`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deployer import api, exits, operations, runlog
from deployer.arguments import Values, names
from deployer.errors import InputError, PlanRefused
from deployer.inventory import Inventory
from deployer.invocation import command
from deployer.keyscan import key_fingerprint
from deployer.operations import Options
from deployer.plan.names import resolve_release
from deployer.release import check_release_name
from deployer.render import text
from deployer.render.annotations import print_annotations
from deployer.render.json import print_json, render_json
from deployer.render.junit import write_junit
from deployer.render.live import wants_live_view
from deployer.render.text import render_text
from deployer.report import OperationReport, Phase, Progress, shown


def options(values: Values) -> Options:
    """The operation's options from the command's flags (those it does not take keep their defaults)."""
    given: dict[str, Any] = values.given

    def flag(name: str, default: Any = None) -> Any:
        return given.get(name, default)

    return api.options(
        version=flag("version"),
        commit=flag("commit"),
        signature=flag("signature"),
        pull=flag("pull") or "",
        sha256=flag("sha256") or "",
        accept_new_host_keys=flag("accept_new_host_keys", False),
        parallel=flag("parallel"),
        dry_run=flag("dry_run", False),
        force=flag("force", False),
        unpin=flag("unpin", False),
        watch=flag("watch", True),
        lock_wait=flag("lock_wait") or 0.0,
        message=flag("message") or "",
        hosts=names(flag("hosts")),
        groups=names(flag("group")),
    )


def _inventory(values: Values, runs_hooks: bool = False) -> tuple[Inventory, Options]:
    chosen = options(values)
    return api.open_inventory(values.inventory, chosen, runs_hooks=runs_hooks), chosen


def emit(report: OperationReport, as_json: bool) -> int:
    """Print an operation's report in the form asked for; keep its JSON beside the run log."""
    exits.ignore_ctrl_c_from_now_on()
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
    log = exits.run_log()
    if not log:
        return
    path = os.path.splitext(log)[0] + ".json"
    try:
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as handle:
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


def deploy(values: Values) -> int:
    chosen, flags = _inventory(values, runs_hooks=True)
    with (
        api.artifact_source(values.artifact, values.git, values.repo, flags) as (source, flags),
        _progress(chosen) as progress,
    ):
        report = operations.deploy(chosen, source, values.release, flags, progress)
    return emit(report, values.json)


def rollback(values: Values) -> int:
    chosen, flags = _inventory(values, runs_hooks=True)
    with _progress(chosen) as progress:
        report = operations.rollback(chosen, values.to, flags, progress)
    return emit(report, values.json)


def watch(values: Values) -> int:
    chosen, flags = _inventory(values, runs_hooks=True)
    with _progress(chosen) as progress:
        report = operations.watch_fleet(chosen, flags, progress, values.duration)
    return emit(report, values.json)


def rollback_drill(values: Values) -> int:
    check = None
    if values.verify:  # before anything is read or asked: a missing extra is bad input
        run_checks = _testinfra_checks("rollback-drill runs `verify`'s checks after each phase", "or pass --no-verify")
    chosen, flags = _inventory(values, runs_hooks=True)
    if values.verify:

        def check(release: str) -> tuple[bool, str]:
            result = run_checks(chosen, release, lock_free=False, quiet=True)
            lines = result.output.strip().splitlines()
            return result.ok, "; ".join(result.failed[:5]) or (lines[-1] if lines else "no output")

    try:
        with (
            api.artifact_source(values.artifact, values.git, values.repo, flags) as (source, flags),
            _progress(chosen) as progress,
        ):
            report = operations.drill(chosen, source, flags, progress=progress, check=check)
    except PlanRefused as refused:
        if values.junit:  # CI still gets a report saying why the drill did not run
            refusal = OperationReport("rollback-drill", None, phases=[Phase("baseline", 0.0, False, str(refused))])
            write_junit(refusal, values.junit)
        raise
    if values.junit:
        write_junit(report, values.junit)
    return emit(report, values.json)


def out(line: str, **kwargs: Any) -> None:
    """print(), with secret values replaced by ***: host-provided text (hook output, messages) may hold them."""
    print(shown(line), **kwargs)


def status(values: Values) -> int:
    chosen, flags = _inventory(values)
    view = operations.read_fleet(chosen, flags)
    data = operations.status_data(view)
    if values.json:
        print_json(data)
    else:
        text.status(data)
    return operations.status_exit_code(view)


def history(values: Values) -> int:
    chosen, flags = _inventory(values)
    view = operations.read_fleet(chosen, flags, history=operations.history_records(values.limit))
    entries = operations.history_entries(view, values.limit)
    if values.json:
        print_json({"history": entries, "unreachable": view.unreachable})
    else:
        text.history(entries, len(view.inventory.hosts))
    return _warn_unreachable(view.unreachable, "; its history is not shown")


def check(values: Values) -> int:
    """Load the inventory (every key checked) and read every host: could a deploy run there?"""
    chosen, flags = _inventory(values)
    view = operations.read_fleet(chosen, flags)
    rows = operations.check_rows(view)
    ok = all(row["ok"] for row in rows)
    if values.json:
        print_json({"ok": ok, "inventory": view.inventory.path, "hosts": rows})
    else:
        text.check_table(rows)
    return 0 if ok else 1


def releases(values: Values) -> int:
    chosen, flags = _inventory(values)
    view = operations.read_fleet(chosen, flags)
    rows = operations.releases_table(view)
    if values.json:
        print_json({"releases": rows, "unreachable": view.unreachable})
        return 1 if view.unreachable else 0
    text.releases(rows, len(view.states))
    return _warn_unreachable(view.unreachable)


def lock_status(values: Values) -> int:
    chosen, flags = _inventory(values)
    view = operations.read_fleet(chosen, flags)
    data = operations.status_data(view)
    locks = {h["host"]: h["lock"] for h in data["hosts"] if h.get("lock")}
    if values.json:
        print_json({"locks": locks, "unreachable": view.unreachable})
        return 1 if locks else 0
    text.lock_status(locks)
    _warn_unreachable(view.unreachable)
    return 1 if locks else 0


def _warn_unreachable(unreachable: dict[str, str], detail: str = "") -> int:
    """Name each host that could not be read (stderr); exit 1 when any could not."""
    for name, reason in sorted(unreachable.items()):
        out(f"warning: {name} unreachable ({reason}){detail}", file=sys.stderr)
    return 1 if unreachable else 0


def unlock(values: Values) -> int:
    def confirm(question: str) -> bool:
        if values.yes:
            return True
        if not sys.stdin.isatty():
            raise InputError(f"{question} Not confirmed: stdin is not a terminal; pass --yes to remove it")
        answer = input(f"{question} [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    chosen, flags = _inventory(values)
    return emit(operations.unlock(chosen, confirm, flags), values.json)


def unpin(values: Values) -> int:
    chosen, flags = _inventory(values)
    return emit(operations.unpin(chosen, flags), values.json)


def place_signers(values: Values) -> int:
    chosen, flags = _inventory(values)
    return emit(operations.place_signers(chosen, flags), values.json)


def prune(values: Values) -> int:
    chosen, flags = _inventory(values)
    return emit(operations.prune(chosen, flags), values.json)


def verify(values: Values) -> int:
    """Check every host with the testinfra suite; the release defaults to the one the fleet is on."""
    run_checks = _testinfra_checks("verify checks every host with testinfra")
    chosen, flags = _inventory(values)
    release = values.release
    if release is None:
        view = operations.read_fleet(chosen, flags)
        currents = sorted({state.current or "(none)" for state in view.states.values()})
        if view.unreachable or len(currents) != 1 or currents == ["(none)"]:
            split = operations.status_data(view)["split"]
            raise InputError(
                f"cannot tell which release to expect (hosts: {split or 'none'}, unreachable: "
                f"{', '.join(sorted(view.unreachable)) or 'none'}); pass --release ID"
            )
        release = currents[0]
    else:  # a release id, a version label or a commit prefix, as the fleet records them
        check_release_name(release, "--release")
        named, why = resolve_release(release, operations.read_fleet(chosen, flags).states)
        if named is None:
            raise InputError(why)
        release = named
    result = run_checks(chosen, release, values.junit, quiet=values.json)
    verdict = f"verify {release}: {'PASS' if result.ok else 'FAIL'} on {len(chosen.hosts)} host(s)"
    if values.json:
        print_json({"release": release, "ok": result.ok, "verdict": verdict, "failed": result.failed})
    else:
        print(verdict)
    return 0 if result.ok else 1


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a module blocked in sys.modules, a broken installation
        return False


def _testinfra_checks(why: str, otherwise: str = "") -> Callable[..., Any]:
    """`deployer.verify.verify`, or a clear refusal when the `verify` extra (pytest, testinfra) is missing."""
    missing = [name for name in ("pytest", "testinfra") if not _importable(name)]
    if missing:
        install = "pip install 'deployer[verify]'" + (f", {otherwise}" if otherwise else "")
        raise InputError(f"{why}: it needs pytest and pytest-testinfra ({', '.join(missing)} missing): {install}")
    from deployer.verify import verify as run_checks  # noqa: PLC0415 - only when checks run

    return run_checks


def init(values: Values) -> int:
    """Write a first inventory and known_hosts: hosts from a list, an ssh_config or an Ansible
    inventory; their keys from ssh-keyscan, kept only once their fingerprints are confirmed."""
    from deployer import init as first  # noqa: PLC0415 - only this command needs it

    targets, source = first.gather_targets(values.hosts, values.ssh_config, values.ansible)
    if not values.force:
        first.refuse_existing(values.out)
    keys = first.scan_keys(targets)
    shown_lines = first.fingerprint_lines(targets, keys)
    if values.accept_fingerprints:
        accepted = first.accepted_fingerprints(values.accept_fingerprints)
        keys = first.keep_accepted(keys, accepted, values.accept_fingerprints)
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
        targets,
        keys,
        values.out,
        user=values.user,
        deploy_to=values.deploy_to,
        identity_file=values.identity_file,
        source=source,
        force=values.force,
    )
    if values.json:
        print_json(
            {
                "inventory": written.inventory,
                "known_hosts": written.known_hosts,
                "hosts": [{"name": t.name, "address": t.address, "port": t.port} for t in targets],
                "fingerprints": {name: [key_fingerprint(line) for line in lines] for name, lines in keys.items()},
            }
        )
    else:
        print(f"wrote {written.inventory} ({len(targets)} host(s)) and {written.known_hosts}")
        relative = os.path.relpath(written.inventory)
        print(f"next: {command('check')}" + ("" if relative == "deploy.yml" else f" -i {relative}"))
    return 0


def sign(values: Values) -> int:
    """Sign ARTIFACT; with --git, first build that ref into ARTIFACT (the same reproducible tarball
    `deploy --git` builds, so its signature verifies for either)."""
    from deployer import signing  # noqa: PLC0415 - only this command needs it
    from deployer.revision import pack_git  # noqa: PLC0415

    artifact = values.artifact
    if not values.key:
        raise InputError(f"no signing key: pass --key FILE (see `{command('sign --help')}`)")
    built = None
    if values.git:
        if not artifact.endswith((".tar.gz", ".tgz")):
            raise InputError(f"--git: {artifact} is where the built release goes; name it .tar.gz")
        if os.path.exists(artifact):
            raise InputError(f"--git: {artifact} exists already; the built release is never written over a file")
        built = pack_git(values.repo or ".", values.git, artifact)
    written = signing.sign(artifact, values.key, values.namespace, values.out)
    if values.json:
        commit = {"commit": built.commit} if built is not None else {}
        print_json({"artifact": artifact, "signature": written, "namespace": values.namespace, **commit})
    else:
        print(written)
    return 0


def report(values: Values) -> int:
    """Write a run's JSON report as one HTML page (`latest`: the newest report kept beside the run logs)."""
    from deployer.render.html import write_html  # noqa: PLC0415 - only this command needs it

    path = values.path
    if path == "latest" and not os.path.exists(path):
        kept = sorted(Path(runlog.folder()).glob("*.json"))
        if not kept:
            raise InputError(f"no run reports in {runlog.folder()}: name one (a --json output)")
        path = str(kept[-1])
    page = values.out or os.path.splitext(path)[0] + ".html"
    write_html(path, page)
    if values.json:
        print_json({"report": path, "html": page})
    else:
        print(page)
    return 0


HANDLERS: dict[str, Callable[[Values], int]] = {
    "deploy": deploy,
    "rollback": rollback,
    "rollback-drill": rollback_drill,
    "watch": watch,
    "status": status,
    "history": history,
    "releases": releases,
    "check": check,
    "lock-status": lock_status,
    "unlock": unlock,
    "unpin": unpin,
    "prune": prune,
    "place-signers": place_signers,
    "verify": verify,
    "init": init,
    "sign": sign,
    "report": report,
}
