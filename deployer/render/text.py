"""Plain text: the per-host summary and verdict of an operation, and the status, history, releases
and lock-status views. Every line passes through `report.shown` (secrets, host text)."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from deployer.invocation import command
from deployer.plan import describe_pin
from deployer.report import OperationReport, shown
from deployer.revision import Revision


def _out(text: str, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(shown(text) + "\n")


def render_text(report: OperationReport, stream: TextIO | None = None) -> None:
    """The per-host summary table and the verdict, in plain text (no colours, no control codes)."""
    out = stream or sys.stdout
    if report.hosts:
        width = max(len(result.host) for result in report.hosts)
        for result in sorted(report.hosts, key=lambda r: r.host):
            move = f"{result.before or '-'} -> {result.after or '-'}"
            check = "verified" if result.verified else ""
            line = f"  {result.host:<{width}}  {result.status:<9} {move}"
            if check:
                line += f"  [{check}]"
            if result.seconds:
                line += f"  {result.seconds:.2f}s"
            if result.message:
                line += f"  {result.message}"
            out.write(shown(line.rstrip()) + "\n")
    for warning in report.warnings:
        out.write(shown(f"warning: {warning}") + "\n")
    for note in report.notes:
        out.write(shown(f"note: {note}") + "\n")
    out.write(shown(report.verdict()) + "\n")
    out.flush()


def revision_label(version: str | None, commit: str | None) -> str:
    """ "1.4.2 (abc12345)" for the tables: what people call the release."""
    return Revision(version=version or "", commit=commit or "").label()


def status(data: dict[str, Any], out: TextIO | None = None) -> None:
    """`inv status`: each host's current and previous release and problems; the fleet's split, pin, lock."""
    width = max(len(host["host"]) for host in data["hosts"])
    _out(f"deploy_to: {data['deploy_to']}", out)
    for host in data["hosts"]:
        name = f"{host['host']:<{width}}"
        if not host["reachable"]:
            _out(f"  {name}  UNREACHABLE  {host['error']}", out)
            continue
        releases = len(host["releases"])
        current, previous = host["current"] or "-", host["previous_version"] or "-"
        line = f"  {name}  current={current}"
        label = revision_label(host.get("version"), host.get("commit"))
        if label:
            line += f" [{label}]"
        if host.get("signed_by"):
            line += f" signed by {host['signed_by']['principal']}"
        line += f"  previous={previous}  releases={releases}"
        if host["deploy_to"] != data["deploy_to"]:
            line += f"  deploy_to={host['deploy_to']}"
        if host["lock"]:
            line += "  LOCKED"
        for problem in host["problems"]:
            line += f"  PROBLEM: {problem}"
        if host.get("damaged"):
            line += f"  DAMAGED (empty or torn, a power cut?): {', '.join(host['damaged'])}"
        _out(line, out)
    if data["consistent"]:
        _out(f"fleet consistent on {data['currents'][0]}", out)
    else:
        split = "; ".join(f"{release} on {', '.join(names)}" for release, names in sorted(data["split"].items()))
        _out(f"fleet NOT consistent: {split or 'no host has a release'}", out)
    pin = data["pin"]
    if pin:
        _out(f"PINNED: {describe_pin(pin)}; `{command('deploy')}` refuses until `{command('unpin')}`", out)
    if data["locked"]:
        first = next(h for h in data["hosts"] if h.get("lock"))
        stale = " (STALE: the process that took it is gone)" if first["lock"]["stale"] else ""
        _out(f"LOCKED on {', '.join(data['locked'])}: {first['lock']['description']}{stale}", out)
    if data["schema"]:
        schema = data["schema"]
        _out(f"database schema {schema['version']} (compatible down to {schema['min_compatible']})", out)


def history(entries: list[dict[str, Any]], total_hosts: int, out: TextIO | None = None) -> None:
    """`inv history`: newest first, one line per event and the hosts it happened on; a drill is one line."""
    total = total_hosts
    for entry in entries:
        hosts = entry["hosts"]
        where = "all hosts" if len(hosts) == total else ", ".join(hosts)
        what = entry.get("op", "?")
        if "to" in entry:
            move = f"{entry.get('from') or '-'} -> {entry.get('to')}"
        else:
            move = f"{entry.get('release', '')} {entry.get('detail', '')}".strip()
        label = revision_label(entry.get("version"), entry.get("commit"))
        if label:
            move += f" [{label}]"
        if entry.get("signed_by"):
            move += f" signed by {entry['signed_by']['principal']}"
        message = f"  ({entry['message']})" if entry.get("message") else ""
        if entry.get("phases"):
            steps = ", ".join(
                f"{phase.get('drill')} {phase.get('from') or '-'} -> {phase.get('to')}" for phase in entry["phases"]
            )
            message += f"  [{steps}]"
        _out(
            f"{entry.get('time', '?'):<20}  {what:<19} {move}  {entry.get('result', '')}  "
            f"by {entry.get('user', '?')}  on {where}{message}",
            out,
        )
    if not entries:
        _out("no history recorded yet", out)


def releases(rows: list[dict[str, Any]], total_hosts: int, out: TextIO | None = None) -> None:
    """`inv releases`: newest first, with where each release is current, previous, pinned, bad, failed."""
    total = total_hosts
    for row in rows:
        marks = []
        if row["current_on"]:
            marks.append("CURRENT" + ("" if len(row["current_on"]) == total else f" on {','.join(row['current_on'])}"))
        if row["previous_on"]:
            marks.append("previous")
        if row["pinned"]:
            marks.append("PINNED")
        if row["bad"]:
            marks.append(
                f"BAD ({row['bad'].get('why', '')}, {row['bad'].get('user', '?')} {row['bad'].get('time', '')})"
            )
        if row["failed_on"]:
            marks.append(f"FAILED on {','.join(row['failed_on'])}")
        if row.get("signed_by"):
            where = "" if len(row["signed_on"]) == len(row["hosts"]) else f" (on {','.join(row['signed_on'])})"
            marks.append(f"signed by {row['signed_by']['principal']}{where}")
        have = f"{len(row['hosts'])}/{total} hosts"
        label = revision_label(row.get("version"), row.get("commit")) or "-"
        _out(f"{row['id']:<34} {label:<24} {have:<11} {'  '.join(marks)}".rstrip(), out)
    if not rows:
        _out("no releases on any host", out)


def lock_status(locks: dict[str, Any], out: TextIO | None = None) -> None:
    """`inv lock-status`: who holds the lock on each host, and whether that run provably is gone."""
    if not locks:
        _out("no host is locked", out)
    for name, lock in sorted(locks.items()):
        if lock["stale"]:
            clear = command("unlock")
            verdict = f"STALE: taken on this machine by a process that no longer runs; clear it with `{clear}`"
        elif lock["stale"] is None:
            verdict = "cannot tell from here whether the run that took it is still going"
        else:
            verdict = "HELD by a running process"
        _out(f"  {name}: {lock['description']}  [{verdict}]", out)


def check_table(rows: list[dict[str, Any]], out: TextIO | None = None) -> None:
    """`deployer check`: one line per host (connection, deploy_to, tools, disk), then its problems."""
    _out(f"{'host':<16} {'address':<22} {'connect':<8} {'deploy_to':<10} {'tools':<8} {'free':>9}  current", out)
    for row in rows:
        if row["connect"] != "ok":
            _out(f"{row['host']:<16} {row['address']:<22} {'FAILED':<8} {row['connect']}", out)
            continue
        folder = (
            ("writable" if row["writable"] else "READONLY")
            if row["deploy_to_exists"]
            else ("creatable" if row["writable"] else "CANNOT")
        )
        tools = "ok" if not row["missing_tools"] else "MISSING"
        free = f"{row['free_mb']} MB" if row["free_mb"] is not None else "-"
        current = row["current"] or "-"
        _out(f"{row['host']:<16} {row['address']:<22} {'ok':<8} {folder:<10} {tools:<8} {free:>9}  {current}", out)
    problems = [(row["host"], problem) for row in rows for problem in row["problems"]]
    for host, problem in problems:
        _out(f"  {host}: {problem}", out)
    bad = sum(not row["ok"] for row in rows)
    _out(f"check: {'OK' if not bad else 'FAILED'}: {len(rows) - bad}/{len(rows)} host(s) ready to deploy", out)
