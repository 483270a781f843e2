"""The HTML report's picture of each watch after a switch: per check, its samples over time as a
line, its threshold as a dashed line, failures in red, unreadable samples as grey ticks, and the
moments that matter marked (the switch the watch followed, the verdict, the revert it led to).

Everything shown passes `shown()` and HTML escaping: samples hold text from providers."""

from __future__ import annotations

import html
import math
from typing import Any

from deployer.report import shown

WIDTH = 640
HEIGHT = 150
LEFT = 60
TOP = 16
BOTTOM = 28
OUTCOME_COLOURS = {"pass": "#59a14f", "fail": "#d62728", "inconclusive": "#bbbbbb", "error": "#7f7f7f"}


def _text(value: Any) -> str:
    return html.escape(shown(str(value)), quote=True)


def watch_charts(report: dict[str, Any]) -> str:
    """One section per watch of the run (none: "")."""
    watches = report.get("watches") or []
    if not watches:
        return ""
    reverted = any(str(phase.get("name")) == "revert" for phase in report.get("phases") or [])
    parts = ["<h2>Watch after the switch</h2>"]
    for watch in watches:
        verdict = str(watch.get("verdict", ""))
        parts.append(
            f'<h3 class="watch {_text(verdict)}">{_text(watch.get("label", ""))} on {_text(watch.get("release", ""))}: '
            f"{_text(verdict.upper())}</h3><p>{_text(watch.get('reason', ''))}</p>"
        )
        ended = float(watch.get("seconds") or 0)
        end_label = "revert" if reverted and verdict in ("failed", "undecided") else verdict
        for check in watch.get("checks") or []:
            samples = [s for s in watch.get("samples") or [] if s.get("check") == check.get("name")]
            parts.append(_check_chart(check, samples, ended, end_label))
    return "\n".join(parts)


def _check_chart(check: dict[str, Any], samples: list[dict[str, Any]], ended: float, end_label: str) -> str:
    name = str(check.get("name", ""))
    threshold = check.get("threshold")
    values = [float(s["value"]) for s in samples if isinstance(s.get("value"), (int, float))]
    values = [value for value in values if math.isfinite(value)]
    scale_values = values + ([float(threshold)] if isinstance(threshold, (int, float)) else [])
    low = min([0.0, *scale_values])
    high = max([*scale_values, low + 1e-9]) * 1.15 or 1.0
    span_x = max(ended, max((float(s.get("at") or 0) for s in samples), default=0.0), 0.001)
    plot_w, plot_h = WIDTH - LEFT - 10, HEIGHT - TOP - BOTTOM

    def x(at: float) -> float:
        return LEFT + at / span_x * plot_w

    def y(value: float) -> float:
        return TOP + plot_h - (value - low) / (high - low) * plot_h

    parts = [
        f'<svg class="watch-check" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'font-family="sans-serif" font-size="11" role="img" aria-label="{_text(name)}">',
        f'<text x="{LEFT}" y="11" fill="#222">{_text(name)} ({_text(check.get("fails_if", ""))})</text>',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ddd"/>',
        f'<text x="{LEFT - 4}" y="{y(high) + 10:.1f}" text-anchor="end" fill="#666">{high:.3g}</text>',
        f'<text x="{LEFT - 4}" y="{y(low):.1f}" text-anchor="end" fill="#666">{low:.3g}</text>',
    ]
    if isinstance(threshold, (int, float)):
        ty = y(float(threshold))
        parts.append(
            f'<line class="threshold" x1="{LEFT}" y1="{ty:.1f}" x2="{LEFT + plot_w}" y2="{ty:.1f}" '
            f'stroke="#d62728" stroke-dasharray="5 3"/><text x="{LEFT + plot_w - 2}" y="{ty - 3:.1f}" '
            f'text-anchor="end" fill="#d62728">threshold {float(threshold):.3g}</text>'
        )
    points = [
        (x(float(s.get("at") or 0)), y(float(s["value"])))
        for s in samples
        if isinstance(s.get("value"), (int, float)) and math.isfinite(float(s["value"]))
    ]
    if len(points) > 1:
        line = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        parts.append(f'<polyline class="samples" points="{line}" fill="none" stroke="#4e79a7" stroke-width="1.5"/>')
    for sample in samples:
        outcome = str(sample.get("outcome", ""))
        colour = OUTCOME_COLOURS.get(outcome, "#999999")
        at = float(sample.get("at") or 0)
        title = f"{at:.1f}s: {outcome}: {sample.get('text', '')}"
        value = sample.get("value")
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            parts.append(
                f'<circle class="sample {_text(outcome)}" cx="{x(at):.1f}" cy="{y(float(value)):.1f}" r="3.5" '
                f'fill="{colour}"><title>{_text(title)}</title></circle>'
            )
        else:  # no value (empty, unreadable): a tick on the axis
            parts.append(
                f'<rect class="sample {_text(outcome)}" x="{x(at) - 1.5:.1f}" y="{TOP + plot_h - 10}" width="3" '
                f'height="10" fill="{colour}"><title>{_text(title)}</title></rect>'
            )
    end_colour = "#d62728" if end_label == "revert" else "#555555"
    for at, label, colour, anchor in ((0.0, "switched", "#555555", "start"), (ended, end_label, end_colour, "end")):
        mx = x(at)
        parts.append(
            f'<line class="moment" x1="{mx:.1f}" y1="{TOP}" x2="{mx:.1f}" y2="{TOP + plot_h}" stroke="{colour}" '
            f'stroke-dasharray="2 2"/><text x="{mx:.1f}" y="{HEIGHT - 14}" text-anchor="{anchor}" '
            f'fill="{colour}">{_text(label)}</text>'
        )
    parts.append(f'<text x="{LEFT + plot_w}" y="{HEIGHT - 2}" text-anchor="end" fill="#666">{span_x:.1f}s</text>')
    parts.append("</svg>")
    return "\n".join(parts)
