"""CI annotations: on GitHub Actions, one `::error` workflow command per failed host (and one for a
refusal), so the run's summary page names the host and the reason next to the job.

Host text passes `shown()` first (no control characters, so no newline can start another workflow
command), then GitHub's own escaping for a command's message and properties.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TextIO

from deployer.report import FAILED, REVERTED, OperationReport, shown


def github_actions(environ: Mapping[str, str] | None = None) -> bool:
    return (environ if environ is not None else os.environ).get("GITHUB_ACTIONS") == "true"


def _message(text: str) -> str:
    return shown(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    return _message(text).replace(":", "%3A").replace(",", "%2C")


def error_lines(report: OperationReport) -> list[str]:
    """The `::error` lines for this report: a refusal, each failed or reverted host, fleet problems."""
    what = f"{report.operation} {report.target}" if report.target else report.operation
    lines = []
    if report.refusal:
        lines.append(f"::error title={_property(what + ' refused')}::{_message(report.refusal)}")
    for result in sorted(report.hosts, key=lambda r: r.host):
        if result.status == FAILED or (result.status == REVERTED and not report.reverted_to_start):
            title = _property(f"{what} {result.status} on {result.host}")
            lines.append(f"::error title={title}::{_message(f'{result.host}: {result.message or result.status}')}")
    for problem in report.problems:
        lines.append(f"::error title={_property(what + ' failed')}::{_message(problem)}")
    for phase in report.phases:
        if report.operation == "rollback-drill" and not phase.ok:
            lines.append(f"::error title={_property('rollback-drill ' + phase.name)}::{_message(phase.detail)}")
    return lines


def print_annotations(report: OperationReport, stream: TextIO | None = None) -> None:
    """Write the annotations where the CI reads them (stdout), when running on GitHub Actions."""
    if github_actions():
        for line in error_lines(report):
            print(line, file=stream or sys.stdout)
