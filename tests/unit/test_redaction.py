"""Secrets never shown, also transformed: a host's log tail (remote `log_tail`: the last 5 lines
joined with spaces, cut at 400 characters) of a hook that printed a PEM key shows none of it."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest

from deployer.redaction import MIN_PIECE, Redactor

LIB = Path(__file__).resolve().parents[2] / "deployer" / "remote" / "lib.sh"
KEY = "\n".join(
    ["-----BEGIN PRIVATE KEY-----"]
    + [base64.b64encode(os.urandom(48)).decode() for _ in range(12)]
    + ["-----END PRIVATE KEY-----"]
)


def windows(secret: str) -> set[str]:
    """Every run of MIN_PIECE characters inside a piece of the secret: none may be shown."""
    return {piece[i : i + MIN_PIECE] for piece in secret.split() for i in range(len(piece) - MIN_PIECE + 1)}


def log_tail(tmp_path: Path, text: str) -> str:
    log = tmp_path / "hook.log"
    log.write_text(text)
    done = subprocess.run(["sh", "-c", f'. "{LIB}"; log_tail "$1"', "sh", str(log)], capture_output=True, text=True)
    return done.stdout


@pytest.mark.parametrize("before", ["", "starting\n", "x" * 150 + "\n", "y" * 330 + "\n"])
def test_a_key_printed_by_a_hook_is_not_in_its_log_tail_however_it_was_cut(tmp_path, before):
    redact = Redactor()
    redact.add([KEY, "tok-123"])
    tail = log_tail(tmp_path, before + KEY + "\nhook failed\n")
    assert windows(KEY) & {tail[i : i + MIN_PIECE] for i in range(len(tail))}, "the raw tail shows the key"
    shown = redact(f"after_switch hook failed: {tail} (exit 1)")
    assert not windows(KEY) & {shown[i : i + MIN_PIECE] for i in range(len(shown))}, shown
    assert shown.startswith("after_switch hook failed: ") and shown.endswith(" (exit 1)")


def test_whole_values_and_values_with_their_whitespace_changed():
    redact = Redactor()
    redact.add(["two words here", "s3cr3t-token", "ab"])
    assert redact("a two   words\there b s3cr3t-token c ab") == "a *** b *** c ab"  # under 3 characters: kept
    assert redact("nothing secret in deploy ok") == "nothing secret in deploy ok"
