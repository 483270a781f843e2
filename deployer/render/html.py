"""`deployer report RUN.json --html OUT`: one self-contained HTML page for a run (no script, no
external file): the verdict, the per-host table, a timeline chart with one row per host, its
phases as bars, the rollout's batches and the drill's phases as marks, failures in red, and each
watch's samples over time (`deployer.render.watch_chart`).

Everything shown passes `shown()` and HTML escaping: a run's report holds text from hosts.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from deployer.errors import InputError
from deployer.render.watch_chart import watch_charts
from deployer.report import shown

COLOURS = {
    "connect": "#b0b7c3",
    "gather": "#7f8c9d",
    "stage": "#4e79a7",
    "wait": "#dcdcdc",
    "fetch": "#76b7b2",
    "validate": "#9467bd",
    "migrate": "#8c564b",
    "switch": "#59a14f",
    "hook": "#17becf",
    "health": "#bcbd22",
    "revert": "#f28e2b",
    "finish": "#a0a0a0",
    "checks": "#b07aa1",
}
FAILED = "#d62728"
PARTS = ("wait", "fetch", "validate", "hook", "health", "revert")  # drawn inside the step they belong to
LABEL_WIDTH = 130
CHART_WIDTH = 900
ROW = 24
TOP = 46


def load_report(path: str) -> dict[str, Any]:
    """A run's JSON report (`--json` output, or the one kept beside the run log); a clear error otherwise."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is not a JSON report: {error}") from None
    if not isinstance(data, dict) or "operation" not in data or "hosts" not in data:
        raise InputError(f"{path} is not a deployer report (no operation and hosts): use one written by --json")
    return data


def _text(value: Any) -> str:
    return html.escape(shown(str(value)), quote=True)


def _colour(phase: str) -> str:
    return COLOURS.get(phase.split(" ", 1)[0], "#c0c0c0")


def _chart(report: dict[str, Any]) -> str:
    timeline = report.get("timeline") or {}
    hosts: dict[str, list[dict[str, Any]]] = timeline.get("hosts") or {}
    names = sorted({*hosts, *(row["host"] for row in report.get("hosts", []))})
    if not names:
        return "<p>No timeline in this report.</p>"
    total = max(
        [float(timeline.get("seconds") or 0)]
        + [float(e.get("end") or e.get("start") or 0) for entries in hosts.values() for e in entries]
    )
    total = max(total, 0.001)
    scale = CHART_WIDTH / total
    height = TOP + ROW * len(names) + 40
    parts: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{LABEL_WIDTH + CHART_WIDTH + 20}" height="{height}" '
        'font-family="sans-serif" font-size="12" role="img" aria-label="timeline">'
    ]
    failed_hosts = {row["host"] for row in report.get("hosts", []) if row.get("status") == "failed"}
    for index, name in enumerate(names):
        y = TOP + index * ROW
        fill = "#f6f6f6" if index % 2 else "#ffffff"
        width = LABEL_WIDTH + CHART_WIDTH
        parts.append(f'<rect class="row" x="0" y="{y}" width="{width}" height="{ROW}" fill="{fill}"/>')
        colour = FAILED if name in failed_hosts else "#222"
        parts.append(f'<text x="6" y="{y + 16}" fill="{colour}">{_text(name)}</text>')
    parts += _failed_batches(timeline, names, scale, total)
    reverts: list[dict[str, Any]] = []
    for mark in timeline.get("marks") or []:
        x = LABEL_WIDTH + float(mark.get("at") or 0) * scale
        kind = str(mark.get("kind"))
        colour = "#555555" if kind == "section" else (FAILED if kind == "revert" else "#999999")
        label = {"batch": "batch ", "section": ""}.get(kind, "") + str(mark.get("name", ""))
        if kind == "revert":  # its reason is a sentence: whole under the chart, numbered here
            reverts.append(mark)
            label = f"revert {len(reverts)}"
        parts.append(
            f'<line class="mark {_text(kind)}" x1="{x:.1f}" y1="{TOP - 14}" x2="{x:.1f}" y2="{TOP + ROW * len(names)}" '
            f'stroke="{colour}" stroke-dasharray="4 3"/>'
        )
        label_y = TOP - 18 if kind == "section" else TOP - 4
        parts.append(f'<text x="{x + 3:.1f}" y="{label_y}" fill="{colour}">{_text(label[:40])}</text>')
    labels: list[str] = []
    for index, name in enumerate(names):
        y = TOP + index * ROW
        for entry in hosts.get(name, []):
            phase = str(entry.get("phase", ""))
            start = float(entry.get("start") or 0)
            end = float(entry["end"]) if entry.get("end") is not None else total  # still open: lasted to the end
            x, length = LABEL_WIDTH + start * scale, max((end - start) * scale, 2.0)
            inner = phase.split(" ", 1)[0] in PARTS
            top, bar = (y + 8, ROW - 16) if inner else (y + 4, ROW - 8)
            ok = entry.get("ok") is not False
            colour = _colour(phase) if ok else FAILED
            title = f"{name}: {phase} {start:.2f}s-{end:.2f}s" + ("" if ok else " FAILED")
            parts.append(
                f'<rect class="bar {"ok" if ok else "failed"}" x="{x:.1f}" y="{top}" width="{length:.1f}" '
                f'height="{bar}" fill="{colour}"><title>{_text(title)}</title></rect>'
            )
            if not ok and not inner and length > 60:  # drawn last, over the bars inside this one
                text = _text(f"✗ {_what_failed(hosts.get(name, []), entry)} failed")
                labels.append(f'<text class="failure" x="{x + 4:.1f}" y="{y + 16}" fill="#ffffff">{text}</text>')
    parts += labels
    axis_y = TOP + ROW * len(names) + 16
    for step in range(0, 11):
        seconds = total * step / 10
        x = LABEL_WIDTH + seconds * scale
        parts.append(f'<text x="{x:.1f}" y="{axis_y}" fill="#666" text-anchor="middle">{seconds:.1f}s</text>')
    parts.append("</svg>")
    captions = "".join(
        f"<li>revert {number} at {float(mark.get('at') or 0):.2f}s ({_text(', '.join(mark.get('hosts') or []))}): "
        f"{_text(mark.get('name', ''))}</li>"
        for number, mark in enumerate(reverts, 1)
    )
    return "\n".join(parts) + (f'<ol class="reverts">{captions}</ol>' if captions else "")


PART_NAMES = {"health": "health check", "validate": "validation", "wait": "wait for a fetch slot"}


def _what_failed(entries: list[dict[str, Any]], step: dict[str, Any]) -> str:
    """The failed part inside a failed step (its health check, a hook), else the step: a failed health
    check is drawn as such, not as a failed switch."""
    start, end = float(step.get("start") or 0), step.get("end")
    for entry in entries:
        phase = str(entry.get("phase", ""))
        inside = start <= float(entry.get("start") or 0) and (end is None or float(entry.get("start") or 0) <= end)
        if phase.split(" ", 1)[0] in PARTS and entry.get("ok") is False and inside:
            return PART_NAMES.get(phase, phase)
    return str(step.get("phase", ""))


def _failed_batches(timeline: dict[str, Any], names: list[str], scale: float, total: float) -> list[str]:
    """A tinted band over each rollout batch in which a host failed, across that batch's rows."""
    marks = sorted(timeline.get("marks") or [], key=lambda mark: float(mark.get("at") or 0))
    hosts = timeline.get("hosts") or {}
    bands = []
    for position, mark in enumerate(marks):
        if mark.get("kind") != "batch":
            continue
        start = float(mark.get("at") or 0)
        end = float(marks[position + 1].get("at") or total) if position + 1 < len(marks) else total
        members = [name for name in mark.get("hosts") or [] if name in names]
        failed = [
            name
            for name in members
            if any(e.get("ok") is False and start <= float(e.get("start") or 0) < end for e in hosts.get(name, []))
        ]
        if not failed:
            continue
        rows = [names.index(name) for name in members]
        top, bottom = TOP + min(rows) * ROW, TOP + (max(rows) + 1) * ROW
        x, width = LABEL_WIDTH + start * scale, max((end - start) * scale, 2.0)
        bands.append(
            f'<rect class="failed-batch" x="{x:.1f}" y="{top}" width="{width:.1f}" height="{bottom - top}" '
            f'fill="{FAILED}" fill-opacity="0.12" stroke="{FAILED}" stroke-width="1.5">'
            f"<title>batch {_text(mark.get('name'))} failed on {_text(', '.join(failed))}</title></rect>"
        )
    return bands


def _legend() -> str:
    items = [*COLOURS.items(), ("failed", FAILED)]
    return " ".join(
        f'<span class="key"><span class="swatch" style="background:{colour}"></span>{_text(name)}</span>'
        for name, colour in items
    )


def _table(report: dict[str, Any]) -> str:
    rows = []
    for row in sorted(report.get("hosts", []), key=lambda r: str(r.get("host"))):
        status = str(row.get("status", ""))
        rows.append(
            f'<tr class="{_text(status)}"><td>{_text(row.get("host"))}</td><td>{_text(status)}</td>'
            f"<td>{_text(row.get('before') or '-')}</td><td>{_text(row.get('after') or '-')}</td>"
            f"<td>{'yes' if row.get('verified') else 'no'}</td><td>{float(row.get('seconds') or 0):.2f}s</td>"
            f"<td>{_text(row.get('message') or '')}</td></tr>"
        )
    headers = ("host", "result", "from", "to", "verified", "time", "health / error")
    head = "<tr>" + "".join(f"<th>{name}</th>" for name in headers) + "</tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _phases(report: dict[str, Any]) -> str:
    phases = report.get("phases") or []
    if report.get("operation") != "rollback-drill" or not phases:
        return ""
    items = "".join(
        f'<li class="{"pass" if p.get("ok") else "fail"}">{_text(p.get("name"))}: {"PASS" if p.get("ok") else "FAIL"} '
        f"in {float(p.get('seconds') or 0):.2f}s {_text(p.get('detail') or '')}</li>"
        for p in phases
    )
    return f"<h2>Drill phases</h2><ol>{items}</ol>"


def render_html(report: dict[str, Any]) -> str:
    verdict = str(report.get("verdict", ""))
    ok = bool(report.get("ok"))
    timeline = report.get("timeline") or {}
    title = f"{report.get('operation', 'run')} {report.get('target') or ''}".strip()
    notes = "".join(f"<li>{_text(n)}</li>" for n in [*report.get("warnings", []), *report.get("notes", [])])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_text(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; }}
.verdict {{ font-size: 18px; font-weight: bold; padding: 8px 12px; border-radius: 4px; }}
.verdict.ok {{ background: #e6f4ea; color: #1e6b34; }} .verdict.bad {{ background: #fde8e8; color: #a31515; }}
table {{ border-collapse: collapse; margin: 12px 0; }} td, th {{ border-bottom: 1px solid #ddd; padding: 4px 10px;
text-align: left; font-size: 13px; white-space: nowrap; }}
td:last-child {{ white-space: normal; }} tr.failed td, tr.reverted td {{ background: #fde8e8; }}
.key {{ margin-right: 12px; font-size: 12px; }} .swatch {{ display: inline-block; width: 12px; height: 12px;
margin-right: 4px; vertical-align: middle; }} li.fail {{ color: #a31515; }}
</style></head><body>
<h1>{_text(title)}</h1>
<p>started {_text(timeline.get("started", "?"))}, {float(timeline.get("seconds") or 0):.2f}s;
{int(report.get("connections") or 0)} SSH connection(s)</p>
<p class="verdict {"ok" if ok else "bad"}">{_text(verdict)}</p>
<ul>{notes}</ul>
{_phases(report)}
<h2>Timeline</h2>
<p>{_legend()}</p>
{_chart(report)}
{watch_charts(report)}
<h2>Hosts</h2>
{_table(report)}
</body></html>
"""


def write_html(report_path: str, out: str) -> str:
    Path(out).write_text(render_html(load_report(report_path)), encoding="utf-8")
    return out
