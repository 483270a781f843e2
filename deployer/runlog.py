"""Logging: every run writes a log file; `-v` also shows the debug lines on stderr.

All records pass through the same redaction as the rest of the output, so secrets never reach a
log. The file is `$DEPLOYER_LOG_DIR` (default `./.deployer-runs/`) `/<UTC time>-<task>-<pid>.log`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from datetime import datetime, timezone

from deployer.report import shown

FORMAT = "%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"


class _Redacting(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = shown(record.getMessage())
        record.args = None
        return True


class _NotProgress(logging.Filter):
    """On stderr: warnings always, debug lines with -v; never the INFO progress lines (already printed)."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return self.verbose and record.levelno < logging.INFO


class _Prefixed(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = "debug" if record.levelno < logging.INFO else record.levelname.lower()
        return f"{prefix}: {record.getMessage()}"


_URL_QUERY = re.compile(r"(?i)(\bhttps?://[^\s?#]*)[?#]\S*")


def command_line_shown(words: list[str]) -> str:
    """The command line as the log keeps it: a URL's query (a presigned URL's credential) replaced by ***."""
    return _URL_QUERY.sub(r"\1?***", " ".join(words))


def folder() -> str:
    """Where run logs (and vagrant's output) go: `$DEPLOYER_LOG_DIR`, else `./.deployer-runs`."""
    return os.environ.get("DEPLOYER_LOG_DIR") or os.path.join(os.getcwd(), ".deployer-runs")


def start(task: str, verbose: bool = False) -> str | None:
    """Configure logging for one run; returns the log file's path (None if it cannot be written)."""
    root = logging.getLogger("deployer")
    root.setLevel(logging.DEBUG)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.propagate = False
    log_folder = folder()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path: str | None = os.path.join(log_folder, f"{stamp}-{task}-{os.getpid()}.log")
    try:
        os.makedirs(log_folder, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))  # type: ignore[arg-type]
        os.chmod(path, 0o600)  # type: ignore[arg-type]  # only its owner reads it: it may be kept as a CI artifact
        file_handler = logging.FileHandler(path, encoding="utf-8")  # type: ignore[arg-type]
    except OSError:
        path = None
    else:
        file_handler.setLevel(logging.DEBUG)
        file_handler.addFilter(_Redacting())
        file_handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(file_handler)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.DEBUG)
    stderr.addFilter(_NotProgress(verbose))
    stderr.addFilter(_Redacting())
    stderr.setFormatter(_Prefixed())
    root.addHandler(stderr)
    root.debug("deployer %s: %s", task, command_line_shown(sys.argv[1:]))
    return path
