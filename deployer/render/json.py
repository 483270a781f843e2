"""JSON: one document on stdout, every string passed through `report.shown`."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from deployer.report import OperationReport, shown_data


def render_json(report: OperationReport, stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    out.write(json.dumps(shown_data(report.to_dict()), indent=2, sort_keys=True) + "\n")
    out.flush()


def print_json(data: Any, out: TextIO | None = None) -> None:
    """Any view's data (status, history, releases, an error) as one JSON document."""
    (out or sys.stdout).write(json.dumps(shown_data(data), indent=2, sort_keys=True) + "\n")
