"""`deployer report --html`: the page of a failed rollout and of a drill, opened in a real headless
browser (Debian's chromium): it renders, and its screenshot shows the bars and the failed batch."""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from tests.conftest import run_inv

pytestmark = pytest.mark.fleet
FAILED_RED = (0xD6, 0x27, 0x28)
SWITCH_GREEN = (0x59, 0xA1, 0x4F)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is not installed (./dev.sh setup installs it)"
    return found


def browse(page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            chromium(),
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,900",
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def pixels(png: Path) -> list[tuple[int, int, int]]:
    """The RGB pixels of an 8-bit RGB or RGBA PNG (what chromium writes), unfiltered by hand."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat, header = 8, b"", b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind, body = data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        position += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6)
    size = 4 if colour == 6 else 3
    raw, stride = zlib.decompress(idat), width * size
    previous, out = bytearray(stride), []
    for row in range(height):
        kind, line = raw[row * (stride + 1)], bytearray(raw[row * (stride + 1) + 1 : (row + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - size] if i >= size else 0
            up, corner = previous[i], previous[i - size] if i >= size else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                guess = left + up - corner
                pa, pb, pc = abs(guess - left), abs(guess - up), abs(guess - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        out += [tuple(line[i : i + 3]) for i in range(0, stride, size)]
        previous = line
    return out  # type: ignore[return-value]


def test_failed_rollout_page_shows_the_failed_batch(make_inventory, artifacts, tmp_path):
    inventory = make_inventory()
    assert run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v1"]).returncode == 0
    failing = make_inventory(
        extra='health_check: {command: "test $(hostname) != web3", timeout: 5, retries: 1, interval: 1}\n'
        "rollout: {batch: 2}\n"
    )
    result = run_inv("deploy", "--inventory", failing, "--artifact", artifacts["v2"], "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    timeline = report["timeline"]["hosts"]
    assert {e["phase"] for e in timeline["web1"]} >= {"connect", "gather", "stage", "switch", "health", "revert"}
    assert any(e["phase"] == "health" and e["ok"] is False for e in timeline["web3"])
    assert [m["name"] for m in report["timeline"]["marks"] if m["kind"] == "batch"] == ["1/2", "2/2"]
    (tmp_path / "run.json").write_text(result.stdout)

    made = run_inv("report", str(tmp_path / "run.json"), "--out", str(tmp_path / "run.html"))
    assert made.returncode == 0, made.stderr
    page = (tmp_path / "run.html").read_text()
    assert "<script" not in page and not re.search(r"(src|href)=", page)  # one self-contained file

    dom = browse(tmp_path / "run.html", "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    assert dom.stdout.count('class="failed-batch"') == 1  # batch 2/2 (web3, web4), not batch 1/2
    assert "batch 2/2 failed on web3" in dom.stdout
    # a failed health check is drawn as one (not as a failed switch); each revert's reason is whole
    assert "✗ health check failed" in dom.stdout and "✗ switch failed" not in dom.stdout
    for mark in (m for m in report["timeline"]["marks"] if m["kind"] == "revert"):
        assert html.escape(mark["name"], quote=True) in page  # under the chart, not cut at 40 characters
    assert len(re.findall(r'class="bar (ok|failed)"', dom.stdout)) >= 4 * 5

    shot = browse(tmp_path / "run.html", f"--screenshot={tmp_path / 'run.png'}")
    assert shot.returncode == 0, shot.stderr
    colours = pixels(tmp_path / "run.png")
    assert colours.count(FAILED_RED) > 1500  # the failed bars of web3
    assert colours.count(SWITCH_GREEN) > 500  # the switch bars of the others


def test_drill_page_shows_its_phases(make_inventory, artifacts, tmp_path):
    inventory = make_inventory()
    assert run_inv("deploy", "--inventory", inventory, "--artifact", artifacts["v1"]).returncode == 0
    runs = tmp_path / "runs"
    drill = run_inv(
        "rollback-drill",
        "--inventory",
        inventory,
        "--artifact",
        artifacts["v2"],
        "--version",
        "v2",
        env={"DEPLOYER_LOG_DIR": str(runs)},
    )
    assert drill.returncode == 0, drill.stdout + drill.stderr
    (kept,) = runs.glob("*-rollback-drill-*.json")  # every run keeps its JSON report beside its log
    report = json.loads(kept.read_text())
    assert report["revision"]["version"] == "v2"  # the drilled release's version is on its page
    assert all(host["seconds"] > 0 for host in report["hosts"])  # each host's time across the phases
    for host, entries in report["timeline"]["hosts"].items():  # the testinfra checks between phases are
        checks = [entry for entry in entries if entry["phase"] == "checks"]  # drawn, not blank gaps
        assert len(checks) == 3 and all(entry["ok"] and entry["end"] > entry["start"] for entry in checks), host
    made = run_inv("report", "latest", "--out", str(tmp_path / "drill.html"), env={"DEPLOYER_LOG_DIR": str(runs)})
    assert made.returncode == 0, made.stderr  # the newest kept report
    page = (tmp_path / "drill.html").read_text()
    assert "Drill phases" in page and "rollback-drill" in page and ": PASS" in page and "[v2]" in page
    assert "0.00s</td>" not in page
    for section in ("deploy", "rollback", "redeploy"):
        assert re.search(rf'class="mark section"[^>]*>\s*<text[^>]*>{section}</text>', page), section
    dom = browse(tmp_path / "drill.html", "--dump-dom")
    assert dom.returncode == 0 and 'class="failed-batch"' not in dom.stdout
    assert json.loads(kept.read_text())["operation"] == "rollback-drill"
