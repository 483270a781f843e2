"""The live per-host view on a terminal (rich): each host's step, upload progress, result and time.

Used only when stderr is a terminal (and TERM is not "dumb", and DEPLOYER_PLAIN is unset); pipes,
CI logs and --json runs get `report.Progress`'s plain lines instead. Colours follow rich's rules,
so NO_COLOR is respected. Worker threads report through `observe` (under a lock); rich redraws
from its own thread. Messages (`say`/`host`) are printed above the live table and logged as
before, so the run log and plain output carry the same events.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO

from deployer.report import FAILED, GOOD_STATUSES, OperationReport, Progress, log, shown

STEP_NAMES = {
    "gather": "reading state",
    "stage": "staging",
    "switch": "switching",
    "finish": "finishing",
    "run": "migration",
}


def wants_live_view(stream: TextIO | None = None) -> bool:
    """A terminal that can redraw; DEPLOYER_PLAIN=1 asks for plain lines anyway."""
    stream = stream or sys.stderr
    if os.environ.get("DEPLOYER_PLAIN") or os.environ.get("TERM") == "dumb":
        return False
    return stream.isatty()


@dataclass
class _Row:
    step: str = "waiting"
    state: str = ""  # "" running | "ok" | "failed"
    sent: int = 0
    total: int = 0
    started: float = 0.0
    seconds: float = 0.0
    detail: str = ""


class LiveProgress(Progress):
    def __init__(self, hosts: list[str] | None = None, stream: TextIO | None = None) -> None:
        from rich.console import Console  # noqa: PLC0415 - rich is imported only for terminals
        from rich.live import Live  # noqa: PLC0415

        super().__init__(stream)
        self.console = Console(file=self.stream, highlight=False)
        self._rows: dict[str, _Row] = {name: _Row() for name in hosts or []}
        self._lock = threading.Lock()
        self._live = Live(console=self.console, get_renderable=self._table, refresh_per_second=8, transient=False)
        self._live.start()

    def say(self, message: str) -> None:
        log.info("%s", message)
        self.console.print(shown(message), markup=False, highlight=False)

    def observe(self, host: str, event: str, detail: str) -> None:
        now = time.monotonic()
        with self._lock:
            row = self._rows.setdefault(host, _Row())
            if event == "connect-failed":
                row.step, row.state, row.detail = "connecting", "failed", detail
            elif event == "connecting":
                row.step, row.state, row.started = "connecting" + (f" via {detail}" if detail else ""), "", now
            elif event == "connected":
                row.step = "connected"
            elif event == "step":
                name = detail.split(" ", 1)[0]
                row.step, row.state, row.sent, row.total, row.detail = STEP_NAMES.get(name, name), "", 0, 0, ""
                row.started = row.started or now
            elif event == "upload":
                sent, _, total = detail.partition("/")
                row.sent, row.total = int(sent), int(total)
            elif event in ("step-ok", "step-failed"):
                row.state = "ok" if event == "step-ok" else "failed"
                if event == "step-failed":
                    why = detail.rsplit(" ", 1)[-1]
                    row.detail = f"exit {why}" if why.isdigit() else why  # "timeout", "lost"
            row.seconds = now - row.started if row.started else 0.0

    def _table(self) -> Any:
        from rich.progress_bar import ProgressBar  # noqa: PLC0415
        from rich.table import Table  # noqa: PLC0415

        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for column in ("host", "step", "upload", "state", "time"):
            table.add_column(column, no_wrap=True)
        with self._lock:
            rows = sorted(self._rows.items())
            for name, row in rows:
                upload: Any = ""
                if row.total:
                    upload = ProgressBar(total=row.total, completed=row.sent, width=20)
                state = {"ok": "[green]ok[/]", "failed": f"[red]failed {row.detail}[/]"}.get(row.state, "…")
                table.add_row(name, row.step, upload, state, f"{row.seconds:.1f}s")
        return table

    def close(self) -> None:
        self._live.stop()


def render_rich(report: OperationReport, console: Any = None) -> None:
    """The final per-host table (from, to, verified, time, health or error) and the verdict, with rich."""
    from rich import box  # noqa: PLC0415
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    console = console or Console(highlight=False)
    if report.hosts:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column("host", no_wrap=True)
        table.add_column("result", no_wrap=True)
        for column in ("from", "to"):  # folded, never cut short: release ids get copied into commands
            table.add_column(column, overflow="fold", min_width=12)
        table.add_column("verified", no_wrap=True)
        table.add_column("time", no_wrap=True)
        table.add_column("health / error", overflow="fold", min_width=12)
        for result in sorted(report.hosts, key=lambda r: r.host):
            style = "green" if result.status in GOOD_STATUSES else ("red" if result.status == FAILED else "yellow")
            table.add_row(
                result.host,
                Text(result.status, style=style),
                result.before or "-",
                result.after or "-",
                "yes" if result.verified else "no",
                f"{result.seconds:.2f}s" if result.seconds else "",
                Text(shown(result.message)),
            )
        console.print(table)
    for warning in report.warnings:
        console.print(Text(shown(f"warning: {warning}"), style="yellow"))
    for note in report.notes:
        console.print(Text(shown(f"note: {note}")))
    console.print(Text(shown(report.verdict()), style="bold green" if report.ok else "bold red"))
