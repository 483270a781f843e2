"""The remote side: POSIX sh scripts shipped in `deployer/remote/`, and how to call and read them.

Each script is sent inline as one `sh -c` exec request: the deploy folder, then `name=value`
options, each quoted, so a phase costs exactly one SSH session per host and no file is left behind.
Scripts answer in records on stdout (`deployer.protocol`); stderr is for humans.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

from deployer.protocol import ScriptOutput, parse_output

if TYPE_CHECKING:
    from deployer.fleet import HostConnection

EXIT_USAGE = 10
EXIT_REFUSED = 20
EXIT_NOT_SYMLINK = 21
EXIT_CHANGED = 22
EXIT_IO = 30
EXIT_DIGEST = 31
EXIT_VALIDATE = 40
EXIT_VERIFY = 50
EXIT_BEFORE_SWITCH = 60
EXIT_AFTER_SWITCH = 61
EXIT_HEALTH = 62
EXIT_AFTER_ROLLBACK = 63
EXIT_MIGRATION = 64

SCRIPT_NAMES = ("gather", "stage", "switch", "finish", "run")
OPTION_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz_")


@cache
def script_source(name: str) -> str:
    """The full text of remote script `name`, with the shared helpers in front."""
    if name not in SCRIPT_NAMES:
        raise ValueError(f"no remote script {name!r}")
    folder = resources.files("deployer") / "remote"
    return (folder / "lib.sh").read_text("utf-8") + "\n" + (folder / f"{name}.sh").read_text("utf-8")


def command_line(script: str, deploy_to: str, /, **options: str | int | float | None) -> str:
    """The exec request for `script`; every argument is quoted, so none can inject.

    Options that are None or "" are left out (the scripts default them to empty).
    """
    args = [deploy_to]
    for key, value in options.items():
        if not key or not set(key) <= OPTION_NAME_CHARS:
            raise ValueError(f"bad option name {key!r} for {script}")
        if value is None or value == "":
            continue
        args.append(f"{key}={value}")
    for arg in args:
        if "\0" in arg:
            raise ValueError(f"argument for {script} contains a NUL character")
    quoted = " ".join(shlex.quote(arg) for arg in args)
    return f"sh -c {shlex.quote(script_source(script))} deployer-{script} {quoted}"


@dataclass(frozen=True)
class ScriptResult:
    """A remote script's exit status and its strictly parsed answer."""

    exit_status: int
    output: ScriptOutput
    seconds: float


def run_script(
    connection: HostConnection,
    script: str,
    deploy_to: str,
    /,
    session_timeout: float | None = None,
    upload: Sequence[bytes | memoryview] | None = None,
    **options: str | int | float | None,
) -> ScriptResult:
    """Run remote script `script` on one host in one session; its answer parsed by the protocol.

    Raises a HostError (unreachable, timeout, ProtocolError) when there is no valid answer.
    """
    command = command_line(script, deploy_to, **options)
    result = connection.run(command, timeout=session_timeout, upload=upload, step=script)
    output = parse_output(result.stdout, result.stderr, connection.host.name, script)
    return ScriptResult(result.exit_status, output, result.seconds)
