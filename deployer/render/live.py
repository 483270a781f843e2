"""The live per-host view on a terminal (rich): each host's step, upload progress, result and time.

Used only when stderr is a terminal (and TERM is not "dumb", and DEPLOYER_PLAIN is unset); pipes,
CI logs and --json runs get `report.Progress`'s plain lines instead. Colours follow rich's rules,
so NO_COLOR is respected. Worker threads report through `observe` (under a lock); rich redraws
from its own thread. Messages (`say`/`host`) are printed above the live table and logged as
before, so the run log and plain output carry the same events.
"""

from __future__ import annotations

import contextlib
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
    "run": "migrating",
}
# `@progress` records a remote script sends as it goes (deployer/remote/): only these are shown, so
# a host cannot write into the view.
PROGRESS_NAMES = {
    "fetch-wait": "waiting to fetch",
    "fetching": "fetching",
    "validating": "validating",
    "reverting": "reverting",
    "before_switch": "hook before_switch",
    "after_switch": "hook after_switch",
    "after_rollback": "hook after_rollback",
    "health_check": "health-checking",
}
WIDE = 120  # columns from which the final table also shows where each host came from


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
    note: str = ""  # the host's latest message (staged, switched, healthy, reverted ...)
    reverting: bool = False  # this step puts the host back (a failed rollout)


class LiveProgress(Progress):
    """The live table while an operation runs. Removed when it ends (transient): what stays on the
    screen is the operation's fleet-level lines (plan, batches) and the final table."""

    def __init__(self, hosts: list[str] | None = None, stream: TextIO | None = None) -> None:
        from rich.console import Console  # noqa: PLC0415 - rich is imported only for terminals
        from rich.live import Live  # noqa: PLC0415

        super().__init__(stream)
        self.console = Console(file=self.stream, highlight=False)
        self._rows: dict[str, _Row] = {name: _Row() for name in hosts or []}
        self._lock = threading.Lock()
        self._watch_line = ""
        self._live = Live(console=self.console, get_renderable=self._table, refresh_per_second=8, transient=True)
        self._terminal = _QuietControlKeys()
        self._live.start()

    def say(self, message: str) -> None:
        """A fleet-level line above the live table, wrapped between words: release ids stay whole."""
        log.info("%s", message)
        self.console.print(shown(message), markup=False, highlight=False, overflow="fold")

    def watching(self, message: str) -> None:
        """The watch's countdown: one line under the table, redrawn in place (the run log keeps each)."""
        log.info("%s", message)
        with self._lock:
            self._watch_line = shown(message.strip())

    def host(self, host: str, message: str) -> None:
        """A host's own news goes into its row (and the run log), not above the table."""
        log.info("  %s: %s", host, message)
        with self._lock:
            self._rows.setdefault(host, _Row()).note = shown(message)

    def observe(self, host: str, event: str, detail: str) -> None:
        super().observe(host, event, detail)
        now = time.monotonic()
        with self._lock:
            row = self._rows.setdefault(host, _Row())
            if event == "connect-failed":
                row.step, row.state, row.detail = "connecting", "failed", detail
            elif event == "connecting":
                row.step, row.state, row.started = "connecting" + (f" via {detail}" if detail else ""), "", now
            elif event == "connected":
                row.step, row.state, row.started = "connected, waiting", "", now
            elif event == "step":
                name = detail.split(" ", 1)[0]
                row.step, row.state, row.sent, row.total, row.detail = STEP_NAMES.get(name, name), "", 0, 0, ""
                row.reverting, row.started = False, now
            elif event == "progress" and detail in PROGRESS_NAMES:
                row.reverting = row.reverting or detail == "reverting"
                name = PROGRESS_NAMES[detail]
                row.step, row.state = (f"revert: {name}" if row.reverting and name != "reverting" else name), ""
                row.started = now  # each part of a step is timed on its own: a long validation shows as such
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
        from rich.text import Text  # noqa: PLC0415

        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", expand=True)
        uploading = any(row.total for row in self._rows.values())
        table.add_column("host", no_wrap=True, min_width=max([4, *map(len, self._rows)]))
        table.add_column("step", no_wrap=True, min_width=28, max_width=34)
        table.add_column("time", no_wrap=True, min_width=6, justify="right")
        if uploading:
            table.add_column("upload", no_wrap=True, min_width=12, max_width=12)
        table.add_column("last news", no_wrap=True, overflow="ellipsis", ratio=1)
        now = time.monotonic()
        with self._lock:
            for name, row in sorted(self._rows.items()):
                running = row.state == "" and row.started and row.step != "waiting"
                seconds = now - row.started if running else row.seconds  # a running step's timer keeps going
                if row.state == "failed":
                    step = Text(f"{row.step}: failed {row.detail}".strip(), style="red")
                elif row.state == "ok":
                    done = "reverted" if row.reverting else "done"
                    step = Text(f"{row.step}: {done}", style="yellow" if row.reverting else "green")
                else:
                    step = Text(row.step)
                cells: list[Any] = [Text(name), step, f"{seconds:.1f}s" if row.started else ""]
                if uploading:
                    upload: Any = ""
                    if row.total and row.sent < row.total:
                        upload = ProgressBar(total=row.total, completed=row.sent, width=12)
                    elif row.total:
                        upload = Text("sent", style="dim")
                    cells.append(upload)
                table.add_row(*cells, Text(row.note))
            if self._watch_line:
                from rich.console import Group  # noqa: PLC0415

                return Group(table, Text(self._watch_line, overflow="fold"))
        return table

    def interrupted(self) -> None:
        """Ctrl-C: the live table goes at once (nothing of it left behind); the lines that follow are plain."""
        self.close()

    def close(self) -> None:
        if self._live.is_started:
            self._live.stop()
        self._terminal.restore()


class _QuietControlKeys:
    """While the live table is drawn, the terminal does not echo `^C`: at the end of a full-width row
    the echo wrapped the line, and the table, erased by its height, left its header behind."""

    def __init__(self) -> None:
        self._saved: tuple[int, list[Any]] | None = None
        try:
            import termios  # noqa: PLC0415 - POSIX terminals only

            fd = sys.stdin.fileno()
            if not os.isatty(fd):
                return
            self._saved = (fd, termios.tcgetattr(fd))
            quiet = termios.tcgetattr(fd)
            quiet[3] &= ~termios.ECHOCTL
            termios.tcsetattr(fd, termios.TCSANOW, quiet)
        except (ImportError, AttributeError, OSError, ValueError):
            self._saved = None

    def restore(self) -> None:
        if self._saved is None:
            return
        import termios  # noqa: PLC0415

        fd, attributes = self._saved
        self._saved = None
        with contextlib.suppress(OSError, termios.error):
            termios.tcsetattr(fd, termios.TCSANOW, attributes)


def render_rich(report: OperationReport, console: Any = None) -> None:
    """The final per-host table and the verdict, with rich. Release ids are never wrapped or cut (they
    get copied into commands): on a narrow terminal the table drops the "from" column (the plan above
    has it) and cuts the health/error text instead, with an ellipsis (the run log and --json keep it whole)."""
    from rich import box  # noqa: PLC0415
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    console = console or Console(highlight=False)
    if report.hosts:
        wide = console.width >= WIDE
        rows = sorted(report.hosts, key=lambda r: r.host)
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, expand=True)

        def fixed(header: str, cells: list[str], justify: Any = "left") -> None:
            """A column as wide as its widest cell, never shrunk: ids and names are never cut."""
            width = max(len(header), *map(len, cells))
            table.add_column(header, no_wrap=True, min_width=width, max_width=width, justify=justify)

        fixed("host", [r.host for r in rows])
        fixed("result", [r.status for r in rows])
        if wide:
            fixed("from", [r.before or "-" for r in rows])
        fixed("to" if wide else "release", [r.after or "-" for r in rows])
        fixed("verified" if wide else "ok?", ["yes", "no"])
        times = [f"{r.seconds:.2f}s" if r.seconds else "" for r in rows]
        fixed("time", times, justify="right")
        table.add_column("health / error", no_wrap=True, overflow="ellipsis", ratio=1, min_width=8)
        for result, seconds in zip(rows, times, strict=True):
            style = "green" if result.status in GOOD_STATUSES else ("red" if result.status == FAILED else "yellow")
            cells: list[Any] = [Text(result.host), Text(result.status, style=style)]
            if wide:
                cells.append(Text(result.before or "-"))
            cells += [
                Text(result.after or "-"),
                "yes" if result.verified else "no",
                seconds,
                Text(shown(result.message)),
            ]
            table.add_row(*cells)
        console.print(table)
        if not wide:  # the table cut these short; what went wrong is worth its whole line
            for result in rows:
                if result.status not in GOOD_STATUSES and result.message:
                    console.print(Text(shown(f"{result.host}: {result.message}")))
    for warning in report.warnings:
        console.print(Text(shown(f"warning: {warning}"), style="yellow"))
    for note in report.notes:
        console.print(Text(shown(f"note: {note}")))
    console.print(Text(shown(report.verdict()), style="bold green" if report.ok else "bold red"))
