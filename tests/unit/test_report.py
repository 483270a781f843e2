"""Snapshots of the two output forms for fixed reports: what CI logs and scripts see, byte for byte.

After a deliberate change to the output, regenerate with UPDATE_SNAPSHOTS=1 and review the diff.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from deployer.render.json import render_json
from deployer.render.text import render_text
from deployer.report import (
    FAILED,
    OK,
    REVERTED,
    SKIPPED,
    HostResult,
    OperationReport,
    Phase,
)

SNAPSHOTS = Path(__file__).parent / "snapshots"


def reverted_deploy() -> OperationReport:
    report = OperationReport(
        "deploy",
        "20261122T041500Z-1a2b3c4d",
        hosts=[
            HostResult(
                "web1",
                REVERTED,
                "20261122T041500Z-1a2b3c4d",
                "20261122T040000Z-9f8e7d6c",
                True,
                0.05,
                "reverted to 20261122T040000Z-9f8e7d6c (verified)",
            ),
            HostResult(
                "web2",
                FAILED,
                "20261122T041500Z-1a2b3c4d",
                "20261122T040000Z-9f8e7d6c",
                True,
                0.07,
                "health check failed after 2 attempt(s), exit 7: connection refused; "
                "reverted to 20261122T040000Z-9f8e7d6c (verified)",
            ),
            HostResult(
                "web3",
                SKIPPED,
                "20261122T040000Z-9f8e7d6c",
                "20261122T040000Z-9f8e7d6c",
                False,
                0.0,
                "not switched: batch 2 failed",
            ),
        ],
        phases=[
            Phase("gather", 0.2, True),
            Phase("stage", 0.4, True),
            Phase("switch batch 1", 0.1, True),
            Phase("switch batch 2", 0.1, False),
            Phase("revert", 0.1, True),
        ],
        warnings=["resuming: 1 host(s) are already on 20261122T041500Z-1a2b3c4d"],
        reverted_to_start=True,
        connections=3,
        sessions={"web1": 4, "web2": 4, "web3": 3},
    )
    return report


def rollback_ok() -> OperationReport:
    return OperationReport(
        "rollback",
        "20261122T040000Z-9f8e7d6c",
        hosts=[
            HostResult("web1", OK, "20261122T041500Z-1a2b3c4d", "20261122T040000Z-9f8e7d6c", True, 0.04),
            HostResult("web2", OK, "20261122T041500Z-1a2b3c4d", "20261122T040000Z-9f8e7d6c", True, 0.05),
        ],
        phases=[Phase("gather", 0.21, True), Phase("switch", 0.09, True)],
        notes=["the fleet is pinned to 20261122T040000Z-9f8e7d6c: `inv deploy` refuses until `inv unpin`"],
        connections=2,
        sessions={"web1": 2, "web2": 2},
    )


REPORTS = {"reverted_deploy": reverted_deploy, "rollback_ok": rollback_ok}


def check(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.write_text(text)
    assert path.exists(), f"no snapshot {path}; run with UPDATE_SNAPSHOTS=1 once and review it"
    assert text == path.read_text()


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_plain_text_snapshot(name):
    out = io.StringIO()
    render_text(REPORTS[name](), out)
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text
    check(f"{name}.txt", text)


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_json_snapshot(name):
    out = io.StringIO()
    render_json(REPORTS[name](), out)
    json.loads(out.getvalue())  # one valid document
    check(f"{name}.json", out.getvalue())


def test_github_annotations_name_each_failed_host_and_cannot_be_forged():
    from deployer.render.annotations import error_lines, github_actions  # noqa: PLC0415
    from deployer.report import FAILED, OK, HostResult, OperationReport  # noqa: PLC0415

    report = OperationReport(
        "deploy",
        "20261202T000000Z-abcdef12",
        hosts=[
            HostResult("web1", OK, "a", "b", True),
            HostResult("web3", FAILED, "a", "a", False, 1.0, "health check failed\n::set-output name=x::100%"),
        ],
    )
    (line,) = error_lines(report)
    assert line.startswith("::error title=deploy 20261202T000000Z-abcdef12 failed on web3::web3: health check")
    assert "\n" not in line and "100%25" in line  # a host's newline cannot start a workflow command
    refused = OperationReport("rollback", None, refusal="the fleet is locked by ci")
    assert error_lines(refused) == ["::error title=rollback refused::the fleet is locked by ci"]
    assert github_actions({"GITHUB_ACTIONS": "true"}) and not github_actions({})


def test_timeline_turns_step_events_into_phases():
    from deployer.report import Timeline  # noqa: PLC0415

    timeline = Timeline()
    for host, event, detail in [
        ("web1", "connecting", ""),
        ("web1", "connected", ""),
        ("web1", "step", "stage"),
        ("web1", "progress", "validating"),
        ("web1", "step-ok", "stage 0"),
        ("web1", "step", "switch"),
        ("web1", "progress", "after_switch"),
        ("web1", "progress", "health_check"),
        ("web1", "step-failed", "switch 62"),
        ("web1", "progress", "<b>made up by a host</b>"),
    ]:
        timeline.observe(host, event, detail)
    timeline.mark("batch", "1/1", ["web1"])
    data = timeline.data()
    phases = [(e["phase"], e["ok"]) for e in data["hosts"]["web1"]]
    assert phases == [
        ("connect", True),
        ("stage", True),
        ("validate", True),
        ("switch", False),
        ("hook after_switch", True),
        ("health", False),  # the part running when the step failed is the one that failed
    ]
    assert all(e["end"] >= e["start"] for e in data["hosts"]["web1"])
    assert data["marks"] == [{"kind": "batch", "name": "1/1", "at": data["marks"][0]["at"], "hosts": ["web1"]}]


def test_html_page_escapes_host_text_and_marks_the_failed_batch():
    from deployer.render.html import render_html  # noqa: PLC0415

    report = {
        "operation": "deploy",
        "target": "r2",
        "ok": False,
        "verdict": "deploy r2: FAILED on 1/2 hosts (web2)",
        "hosts": [
            {"host": "web1", "status": "reverted", "before": "r1", "after": "r1", "verified": True, "seconds": 1.0},
            {"host": "web2", "status": "failed", "before": "r1", "after": "r1", "message": "<script>alert(1)</script>"},
        ],
        "timeline": {
            "started": "2026-12-02T00:00:00Z",
            "seconds": 4.0,
            "hosts": {
                "web1": [{"phase": "switch", "start": 0.5, "end": 1.0, "ok": True}],
                "web2": [{"phase": "switch", "start": 1.0, "end": 3.0, "ok": False}],
            },
            "marks": [
                {"kind": "batch", "name": "1/2", "at": 0.5, "hosts": ["web1"]},
                {"kind": "batch", "name": "2/2", "at": 1.0, "hosts": ["web2"]},
            ],
        },
    }
    page = render_html(report)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count('class="failed-batch"') == 1 and "batch 2/2 failed on web2" in page
    assert 'class="bar failed"' in page and 'class="bar ok"' in page
