"""Where every run ends: its exit status, and every error as one line (never a traceback).

A deployer error is its message and exit status; anything else (paramiko, invoke, OSError, a bug)
is one line naming what failed and the run log's path (where its traceback is), exit 1. With
`--json`, stdout still gets one JSON document carrying the error and the exit status.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable

from deployer import runlog
from deployer.errors import EXIT_HOSTS_FAILED, DeployerError, Interrupted
from deployer.invocation import command
from deployer.render.json import print_json
from deployer.report import shown

EXIT_INTERRUPTED = 130

_settle_before_verdict = False  # set by guarded for the CLI process (never in-process callers)
_run_log: str | None = None  # this run's log file (guarded); its JSON report is written beside it


def guarded(
    action: Callable[[], int],
    task: str = "run",
    verbose: bool = False,
    as_json: bool = False,
    settled_exit: bool = False,
) -> int:
    """Run `action` with logging set up; return its exit status, or the status of the error that ended it."""
    log_path = runlog.start(task, verbose)
    global _settle_before_verdict, _run_log
    _settle_before_verdict = settled_exit
    _run_log = log_path
    try:
        return action()
    except Interrupted as cut:
        return _interrupted(cut, as_json, log_path)
    except DeployerError as error:
        return fail(str(error), error.exit_code, as_json, log_path)
    except KeyboardInterrupt:
        where = f"; run log: {log_path}" if log_path else ""
        hint = f"interrupted: `{command('status')}` shows where each host is{where}"
        return fail(hint, EXIT_INTERRUPTED, as_json, log_path)
    except Exception as error:  # noqa: BLE001 - the last boundary: one line and the run log, never a traceback
        logging.getLogger("deployer.crash").debug("unexpected error in %s", task, exc_info=True)
        where = f"; details in {log_path}" if log_path else ""
        return fail(f"unexpected error: {type(error).__name__}: {error}{where}", EXIT_HOSTS_FAILED, as_json, log_path)


def _interrupted(cut: Interrupted, as_json: bool, log_path: str | None) -> int:
    """Ctrl-C's ending: where each host is was already said; this says whether the operation completed."""
    where = f"; run log: {log_path}" if log_path else ""
    print(shown(("" if cut.complete else "error: ") + str(cut) + where), file=sys.stderr)
    if as_json:
        print_json(
            {
                "ok": cut.complete,
                "interrupted": True,
                ("verdict" if cut.complete else "error"): str(cut),
                "exit_code": cut.exit_code,
                "hosts": cut.hosts,
                "run_log": log_path,
            }
        )
    return cut.exit_code


def fail(message: str, code: int, as_json: bool, log_path: str | None = None) -> int:
    """The error's one line on stderr (and its JSON document on stdout with --json); returns `code`."""
    print(shown(f"error: {message}"), file=sys.stderr)
    if as_json:
        print_json({"ok": False, "error": message, "exit_code": code, "run_log": log_path})
    return code


def run_log() -> str | None:
    return _run_log


def ignore_ctrl_c_from_now_on() -> None:
    """The operation is over and its verdict is about to be printed: a Ctrl-C from here on (the
    process winding down, threads and connections closing) can no longer change anything, so it
    must not change the exit status either (a Python killed by SIGINT would report 130 for a deploy
    that succeeded). Done before the verdict is printed, so no Ctrl-C sent after seeing it counts."""
    if not _settle_before_verdict or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
