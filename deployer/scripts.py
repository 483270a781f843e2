"""The remote side: POSIX sh scripts shipped in `deployer/remote/`, and how to call and read them.

Each script is sent inline as one exec request, so a phase costs exactly one SSH session per host
and no file is left behind. sshd hands that request to the deploy user's login shell, which may be
sh, bash, zsh, tcsh or fish: the request is one fixed form that all of them parse alike,

    exec /bin/sh -c 'eval "$(printf %b "$1")"' deployer-NAME 'ENCODED'

where ENCODED is the script (its arguments set by a first `set --` line) with every byte outside
printable ASCII, and every backslash, quote and `!`, written as a `\\0ooo` octal escape (undone by
the builtin `printf %b`, POSIX). So the login shell sees no newline, backslash sequence, history
`!` or quote to mangle, and only POSIX `sh` ever interprets the script.
Scripts answer in records on stdout (`deployer.protocol`); stderr is for humans.
"""

from __future__ import annotations

import re
import shlex
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

from deployer.protocol import ScriptOutput, parse_output

if TYPE_CHECKING:
    from deployer.connection import HostConnection, Verdict

EXIT_USAGE = 10
EXIT_REFUSED = 20
EXIT_NOT_SYMLINK = 21
EXIT_CHANGED = 22
EXIT_IO = 30
EXIT_DIGEST = 31
EXIT_FENCED = 35  # the run no longer holds this host's lock (or a later session took over): nothing more changed
EXIT_SIGNATURE = 32
EXIT_FETCH = 33
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
    return _remote_file("lib") + "\n" + _remote_file(name)


def _remote_file(stem: str) -> str:
    return (resources.files("deployer") / "remote" / f"{stem}.sh").read_text("utf-8")


@cache
def sent_source(name: str) -> str:
    """What a session sends of script `name`: the helpers of lib.sh it calls (directly or through
    another helper) and its own text, without comment-only lines or indentation. Every session
    carries its script, octal-escaped, in the exec request, and every host's shell parses all of it:
    gather sends 8.3 KB instead of 25 KB."""
    script_source(name)  # checks the name
    body = _without_comment_lines(_remote_file(name))
    return _only_what_is_called(_without_comment_lines(_remote_file("lib")), body) + "\n" + body


FUNCTION_START = re.compile(r"([a-z_][a-z_0-9]*)\(\) *\{ *")


def _only_what_is_called(lib: str, body: str) -> str:
    """`lib` without the functions nothing calls: neither `body`, nor lib's own top-level lines, nor
    a function kept. A function is `name() {` at the start of a line up to the first line that is
    `}` alone (lib.sh's layout, kept by a unit test); a call is the name as a whole shell word
    anywhere in the text (a name in a string or a trap counts: keeping too much is harmless)."""
    lines = lib.split("\n")
    chunks: list[tuple[str, str]] = []  # (function name or "" for a top-level line, text)
    index = 0
    while index < len(lines):
        started = FUNCTION_START.fullmatch(lines[index])
        if started is None:
            chunks.append(("", lines[index]))
            index += 1
            continue
        end = lines.index("}", index)
        chunks.append((started.group(1), "\n".join(lines[index : end + 1])))
        index = end + 1
    names = {name for name, _ in chunks if name}
    kept: set[str] = set()
    reading = "\n".join(text for name, text in chunks if not name) + "\n" + body
    while True:
        called = {name for name in names - kept if re.search(rf"(?<![\w$-]){re.escape(name)}(?![\w-])", reading)}
        if not called:
            break
        kept |= called
        reading = "\n".join(text for name, text in chunks if name in called)
    return "\n".join(text for name, text in chunks if not name or name in kept)


def _without_comment_lines(text: str) -> str:
    """`text` without the lines that start with `#` outside any quoted string, and without the
    indentation of lines that start outside one (a string spanning lines keeps every line it holds
    as it is). The scripts have no here-documents and continue a line only after a space (a unit
    test keeps them so), where indentation would matter."""
    kept = []
    quote = ""
    for line in text.split("\n"):
        if not quote and line.lstrip().startswith("#"):
            continue
        kept.append(line if quote else line.lstrip(" \t"))
        quote = _quote_open_after(line, quote)
    return "\n".join(kept)


def _quote_open_after(line: str, quote: str) -> str:
    """The quote (' or ") still open at the end of `line`, given the one open at its start."""
    index = 0
    while index < len(line):
        char = line[index]
        if quote == "'":
            quote = "" if char == "'" else quote
        elif quote == '"':
            if char == "\\":
                index += 1
            elif char == '"':
                quote = ""
        elif char == "\\":
            index += 1
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1] in " \t;|&("):
            break  # a comment: the rest of the line is not code
        index += 1
    return quote


# The shell that runs every script on the host (tests swap in BusyBox ash or bash --posix).
REMOTE_SHELL = "/bin/sh"
# Printable ASCII that no login shell treats specially inside single quotes (csh: `!`; fish: `\`).
_PLAIN_BYTES = frozenset(range(0x20, 0x7F)) - {ord("\\"), ord("'"), ord("!")}


def octal_escaped(text: str | bytes) -> str:
    """TEXT with every byte that is not plain written as `\\0ooo`, for `printf %b` to restore exactly."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return "".join(chr(byte) if byte in _PLAIN_BYTES else f"\\0{byte:03o}" for byte in data)


def exec_request(name: str, program: str, args: Sequence[str]) -> str:
    """The shell-agnostic exec request running `program` under POSIX sh with positional `args`."""
    for arg in args:
        if "\0" in arg:
            raise ValueError(f"argument for {name} contains a NUL character")
    text = "set -- " + " ".join(shlex.quote(arg) for arg in args) + "\n" + program
    return f"exec {REMOTE_SHELL} -c 'eval \"$(printf %b \"$1\")\"' deployer-{name} '{octal_escaped(text)}'"


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
    return exec_request(script, sent_source(script), args)


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
    gate: threading.Semaphore | None = None,
    verdict: Verdict | None = None,
    **options: str | int | float | None,
) -> ScriptResult:
    """Run remote script `script` on one host in one session; its answer parsed by the protocol.

    `gate`: see `HostConnection.run` (stage's cap on hosts fetching at once, with fetch_gate=1).
    Raises a HostError (unreachable, timeout, ProtocolError) when there is no valid answer.
    """
    command = command_line(script, deploy_to, **options)
    result = connection.run(command, timeout=session_timeout, upload=upload, step=script, gate=gate, verdict=verdict)
    output = parse_output(result.stdout, result.stderr, connection.host.name, script)
    return ScriptResult(result.exit_status, output, result.seconds)
