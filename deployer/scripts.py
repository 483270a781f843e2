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

A host keeps a copy of each script it has run (`<deploy_to>/.deployer/scripts/NAME-DIGEST.sh`,
named by the sha256 of its text): a session then sends a few hundred bytes that source the copy
instead of the whole script (10 to 25 KB, every session). Gather, the first session of every
operation, sums every copy the host keeps with one process (POSIX `cksum`, else `sha256sum`),
checks its own copy by that (a torn or edited copy is never run), asks for its text on stdin when
that copy is missing or damaged (`@progress need-script`), and reports each copy with the same
sums (`@kept`); a later session
of the operation goes by copy only when that gather showed it whole, and otherwise sends the
script whole and keeps it. A copy that vanished in between
(someone emptied `.deployer`) ends that session with EXIT_KEPT_MISSING before anything changed.
Copies are written only where `.deployer` exists (a read of a host that was never deployed leaves
no trace), to a temporary name renamed into place; keeping one removes the same script's other
versions not stored in 30 days.
"""

from __future__ import annotations

import hashlib
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
    from deployer.connection import HostConnection, Session

EXIT_USAGE = 10
EXIT_REFUSED = 20
EXIT_NOT_SYMLINK = 21
EXIT_CHANGED = 22
EXIT_IO = 30
EXIT_DIGEST = 31
EXIT_FENCED = 35  # the run no longer holds this host's lock (or a later session took over): nothing more changed
EXIT_SIGNATURE = 32
EXIT_FETCH = 33
EXIT_KEPT_MISSING = 36  # the host's copy of a script vanished since its gather: nothing was changed
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


def script_arguments(script: str, deploy_to: str, options: dict[str, str | int | float | None]) -> list[str]:
    """`deploy_to` then `key=value` for each option; options that are None or "" are left out
    (the scripts default them to empty)."""
    args = [deploy_to]
    for key, value in options.items():
        if not key or not set(key) <= OPTION_NAME_CHARS:
            raise ValueError(f"bad option name {key!r} for {script}")
        if value is None or value == "":
            continue
        args.append(f"{key}={value}")
    return args


def command_line(script: str, deploy_to: str, /, **options: str | int | float | None) -> str:
    """The exec request carrying all of `script` (no copy kept); every argument is quoted, so none can inject."""
    return exec_request(script, sent_source(script), script_arguments(script, deploy_to, options))


KEPT_FOLDER = ".deployer/scripts"  # under deploy_to: the host's copies of the scripts


@cache
def kept_text(name: str) -> str:
    """The text of the host's copy of script `name`: what a session sends, ended by one newline."""
    return sent_source(name).rstrip("\n") + "\n"


@cache
def kept_sums(name: str) -> tuple[str, str]:
    """What `cksum` and `sha256sum` print of the text of script `name` (computed once per run)."""
    text = kept_text(name).encode("utf-8")
    return posix_cksum(text), hashlib.sha256(text).hexdigest()


@cache
def kept_name(name: str) -> str:
    """The file name of the host's copy of script `name` (its sha256 names it: one file per version)."""
    return f"{name}-{kept_sums(name)[1][:16]}.sh"


def _crc_table() -> list[int]:
    table = []
    for index in range(256):
        crc = index << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


CRC_TABLE = _crc_table()


def posix_cksum(data: bytes) -> str:
    """What POSIX `cksum` prints for `data` read from stdin: its CRC (polynomial 0x04C11DB7, the
    length appended, complemented) and its size."""
    crc = 0
    length = len(data)
    tail = b""
    while length:
        tail += bytes([length & 0xFF])
        length >>= 8
    for byte in data + tail:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ CRC_TABLE[(crc >> 24) ^ byte]
    return f"{crc ^ 0xFFFFFFFF} {len(data)}"


def _whole(name: str) -> str:
    """sh lines defining `deployer_whole`: true when stdin is exactly the text of `name`, as
    `cksum` (POSIX) or, where it is missing (Debian's BusyBox), `sha256sum` prints it."""
    cksum, sha256 = kept_sums(name)
    sums = shlex.quote(cksum) + "|" + shlex.quote(sha256 + "  -")
    # the program chosen first (`command -v`, a builtin): the substitution's shell then execs it,
    # one process instead of a list's two
    return (
        "deployer_whole() { if command -v cksum >/dev/null 2>&1; then deployer_sum=$(cksum 2>/dev/null);"
        " else deployer_sum=$(sha256sum 2>/dev/null); fi;"
        f" case $deployer_sum in {sums}) return 0;; esac; return 1; }}\n"
    )


CAN_CHECK = "{ command -v cksum || command -v sha256sum; } >/dev/null 2>&1"  # else nothing is kept


def _record(name: str, *fields: str) -> str:
    """An sh line printing one protocol record whose fields are fixed text (no tab, newline or quote)."""
    return "printf '%s\\n' " + shlex.quote("\t".join((f"@{name}", *fields))) + "\n"


def _keep_lines(name: str) -> str:
    """sh lines writing `$deployer_body` as the host's copy (only where .deployer exists and a
    copy can be checked), saying so, and removing this script's other versions not stored in 30 days."""
    return (
        f'if {CAN_CHECK} && [ -d "$1/.deployer" ] && mkdir -p "$1/{KEPT_FOLDER}" 2>/dev/null &&'
        ' printf \'%s\\n\' "$deployer_body" >"$deployer_kept.$$" 2>/dev/null &&'
        ' mv -f "$deployer_kept.$$" "$deployer_kept" 2>/dev/null; then\n'
        + _record("kept", kept_name(name))
        + f"find \"$1/{KEPT_FOLDER}\" -type f -name '{name}-*' ! -name {kept_name(name)} -mtime +30"
        " -exec rm -f {} + 2>/dev/null\n"
        'else rm -f "$deployer_kept.$$" 2>/dev/null; fi\n'
    )


@cache
def _sums_by_file() -> dict[str, tuple[str, str]]:
    """file name of each script's copy -> what cksum and sha256sum print of its text."""
    return {kept_name(name): kept_sums(name) for name in SCRIPT_NAMES}


def whole_copies(records: list[list[str]]) -> set[str]:
    """The copies of this version's scripts that `@kept` records show whole: just written by the
    session (no sum), or with the sum gather read (cksum's or sha256sum's) of the script's text."""
    sums = _sums_by_file()
    return {file for file, *sum_ in records if file in sums and (not sum_ or sum_[0] in sums[file])}


def _kept_whole(name: str) -> str:
    """sh lines defining `deployer_kept_whole`: sums every copy the host keeps, with one `cksum`
    (else `sha256sum`) run in their folder, into `$deployer_sums` ("SUM ./FILE" lines: what gather
    reports in `@kept`, so it sums nothing again), and is true when the copy of `name` is among
    them with the sum of its text."""
    cksum, sha256 = kept_sums(name)
    patterns = " | ".join(
        f'*"$deployer_nl"{shlex.quote(line)}"$deployer_nl"*'
        for line in (f"{cksum} ./{kept_name(name)}", f"{sha256}  ./{kept_name(name)}")
    )
    return (
        "deployer_kept_whole() {\n"
        'deployer_sums=$(cd "${deployer_kept%/*}" 2>/dev/null && if command -v cksum >/dev/null 2>&1;'
        " then exec cksum ./*.sh; else exec sha256sum ./*.sh; fi 2>/dev/null)\n"
        f'case "$deployer_nl$deployer_sums$deployer_nl" in {patterns}) return 0;; esac\nreturn 1\n}}\n'
    )


@cache
def asking_program(name: str) -> str:
    """Run the host's copy of `name` when it is whole (saying `have-script`: the controller then
    ends stdin, which lets sshd close the session when the script ends), or ask for its text on
    stdin, keep a copy and run that (gather: the first session of an operation, whose stdin
    carries nothing else)."""
    incomplete = f"the text of the {name} script arrived incomplete"
    return (
        _whole(name) + f'deployer_kept="$1/{KEPT_FOLDER}/{kept_name(name)}"\n'
        "deployer_nl='\n'\n"
        + _kept_whole(name)
        + 'if [ -f "$deployer_kept" ] && deployer_kept_whole; then\n'
        + _record("progress", "have-script")
        + '. "$deployer_kept" </dev/null\nexit $?\nfi\n'
        'unset deployer_sums\nrm -f "$deployer_kept" 2>/dev/null\n'
        + _record("progress", "need-script")
        + "deployer_body=$(cat)\n"
        + f"if {CAN_CHECK}; then\n"  # else the text is run, unchecked, and nothing is kept
        + "if ! printf '%s\\n' \"$deployer_body\" | deployer_whole; then\n"
        + _record("error", str(EXIT_KEPT_MISSING), incomplete)
        + f"exit {EXIT_KEPT_MISSING}\nfi\n"
        + _keep_lines(name)
        + "fi\n"
        + 'eval "$deployer_body" </dev/null\n'
    )


@cache
def kept_program(name: str) -> str:
    """Run the host's copy of `name`, which this operation's gather showed whole (its sum read
    moments ago: checking it again would cost every session a process); if it vanished since,
    stop with EXIT_KEPT_MISSING having changed nothing (the next run's gather sees it gone)."""
    vanished = f"its copy of the deployer's {name} script ({KEPT_FOLDER}) vanished during the run; nothing was changed"
    return (
        f'deployer_kept="$1/{KEPT_FOLDER}/{kept_name(name)}"\n'
        'if [ -f "$deployer_kept" ]; then\n. "$deployer_kept"\nexit $?\nfi\n'
        + _record("error", str(EXIT_KEPT_MISSING), vanished)
        + f"exit {EXIT_KEPT_MISSING}\n"
    )


@cache
def keeping_program(name: str) -> str:
    """All of `name`, run and kept as the host's copy (for the next operation's sessions)."""
    return (
        f"deployer_body={shlex.quote(kept_text(name)[:-1])}\n"  # printf adds the newline back
        f'deployer_kept="$1/{KEPT_FOLDER}/{kept_name(name)}"\n' + _keep_lines(name) + 'eval "$deployer_body"\n'
    )


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
    **options: str | int | float | None,
) -> ScriptResult:
    """Run remote script `script` on one host in one session; its answer parsed by the protocol.

    `gate`: see `HostConnection.run` (stage's cap on hosts fetching at once, with fetch_gate=1).
    Raises a HostError (unreachable, timeout, ProtocolError) when there is no valid answer.
    """
    return _start(connection, script, deploy_to, (session_timeout, upload, gate, False), options).result()


def start_script(
    connection: HostConnection,
    script: str,
    deploy_to: str,
    /,
    session_timeout: float | None = None,
    upload: Sequence[bytes | memoryview] | None = None,
    gate: threading.Semaphore | None = None,
    verdict: bool = False,
    **options: str | int | float | None,
) -> RunningScript:
    """Start remote script `script` on one host (see `run_script`); with `verdict`, the session can
    wait for its batch's verdict (`RunningScript.waits`, `HostConnection.start`)."""
    return _start(connection, script, deploy_to, (session_timeout, upload, gate, verdict), options)


def _start(
    connection: HostConnection,
    script: str,
    deploy_to: str,
    session: tuple[float | None, Sequence[bytes | memoryview] | None, threading.Semaphore | None, bool],
    options: dict[str, str | int | float | None],
) -> RunningScript:
    session_timeout, upload, gate, verdict = session
    args = script_arguments(script, deploy_to, options)
    offer = None
    if script == "gather":
        program, offer = asking_program(script), kept_text(script).encode("utf-8")
    elif kept_name(script) in connection.kept:
        program = kept_program(script)
    else:
        program = keeping_program(script)
    started = connection.start(
        exec_request(script, program, args),
        timeout=session_timeout,
        upload=upload,
        step=script,
        gate=gate,
        offer=offer,
        verdict=verdict,
    )
    return RunningScript(connection, script, started)


class RunningScript:
    """A remote script's session in progress; `result` reads it to its end and parses its answer."""

    def __init__(self, connection: HostConnection, script: str, session: Session) -> None:
        self.connection = connection
        self.script = script
        self.session = session

    def waits(self) -> bool:
        """Read until the script ends or waits for its batch's verdict: whether it waits."""
        return self.session.wait()

    def answer(self, commit: bool) -> None:
        self.session.answer(commit)

    def still_waiting(self) -> bool:
        """Whether its host still waits for the verdict (its session has not ended meanwhile)."""
        channel = self.session.channel
        return not (channel.closed or channel.eof_received)

    def close(self) -> None:
        """Give up on it (its host sees its stdin end)."""
        self.session.close()

    def result(self) -> ScriptResult:
        connection, script = self.connection, self.script
        result = self.session.finish()
        output = parse_output(result.stdout, result.stderr, connection.host.name, script)
        kept = whole_copies(output.all("kept"))
        connection.kept = kept if script == "gather" else connection.kept | kept
        return ScriptResult(result.exit_status, output, result.seconds)
