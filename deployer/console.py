"""The installed `deployer` command: argparse over the table in deployer/commands.py.

Why argparse and not invoke's `Program`: invoke's parser lets a positional swallow `--help`, gives
short flags by first letter (so `-h` meant `--hosts` in one command and `--html` in another), prints
its own options (`--dry`, `--echo`, ...) in the top-level help, and turns bad values into tracebacks.
argparse (standard library) parses one command's flags exactly as the table declares them; help,
errors (one line, exit 2, a JSON document with --json, "did you mean") and completion are ours.
`inv` keeps its tasks (deployer/tasks.py), built from the same table.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import textwrap
from collections.abc import Sequence

from deployer import __version__, exits
from deployer.arguments import ArgumentProblem, near
from deployer.commands import (
    COMMANDS,
    FLAGS,
    FLEET_FLAGS,
    GROUPS,
    LOCK_FLAGS,
    OUTPUT_FLAGS,
    Command,
    default,
)
from deployer.errors import EXIT_BAD_INPUT
from deployer.invocation import ran_as

PROGRAM = "deployer"
TOP_FLAGS = ("-h", "--help", "-V", "--version")


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so every error ends one way."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ArgumentProblem(message)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        code = run(list(sys.argv[1:] if argv is None else argv))
        sys.stdout.flush()
    except BrokenPipeError:  # `deployer --help | head`: the reader left; not an error worth a traceback
        sys.stderr.close()
        code = 0
    sys.exit(code)


def run(argv: list[str]) -> int:
    ran_as(_as_typed())
    as_json = "--json" in argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        if len(argv) > 1 and argv[0] == "help":
            return run([argv[1], "--help"])
        print(top_help())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"{PROGRAM} {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        return _argument_error(_unknown_command(name), as_json)
    spec = COMMANDS[name]
    rest = argv[1:]
    if any(word in ("-h", "--help") for word in _before_separator(rest)):
        print(command_help(spec))
        return 0
    try:
        parsed = vars(_parser(spec).parse_args(rest))
    except ArgumentProblem as problem:
        return _argument_error(_explained(spec, str(problem), rest), as_json and spec.json)
    if name == "completion":
        return _completion(parsed.get("shell"), as_json)
    from deployer import dispatch  # noqa: PLC0415 - after parsing: --help and argument errors stay light

    return dispatch.run(name, parsed, *_configured_inventory())


def _as_typed() -> str:
    """How to run this program again from here, for hints: `deployer` when that is what PATH finds,
    else the path it was started by (`.venv/bin/deployer` from ./dev.sh)."""
    started = sys.argv[0] if sys.argv and sys.argv[0] else PROGRAM
    if os.path.basename(started) != PROGRAM or "/" not in started:
        return PROGRAM
    on_path = shutil.which(PROGRAM)
    if on_path and os.path.realpath(on_path) == os.path.realpath(started):
        return PROGRAM
    return shlex.quote(os.path.relpath(started) if not started.startswith("/") else started)


def _before_separator(words: list[str]) -> list[str]:
    return words[: words.index("--")] if "--" in words else words


def _parser(spec: Command) -> _Parser:
    parser = _Parser(prog=f"{PROGRAM} {spec.name}", add_help=False, allow_abbrev=False)
    for name in spec.flag_names():
        flag = FLAGS[name]
        if name in spec.positional:
            parser.add_argument(flag.attr, metavar=flag.metavar)
            continue
        spellings = [f"-{flag.short}"] if flag.short else []
        spellings.append(f"--{flag.name}")
        if flag.kind == "switch" and flag.default is True:
            parser.add_argument(*spellings, dest=flag.attr, action=argparse.BooleanOptionalAction, default=None)
        elif flag.kind == "switch":
            parser.add_argument(*spellings, dest=flag.attr, action="store_true", default=None)
        else:
            parser.add_argument(*spellings, dest=flag.attr, metavar=flag.metavar, default=None)
    return parser


def _unknown_command(name: str) -> str:
    if name.startswith("-"):
        guess = near(name, TOP_FLAGS)
        hint = f"; did you mean `{PROGRAM} {guess}`?" if guess else f"; flags go after the command (`{PROGRAM} --help`)"
        return f"unknown flag {name}{hint}"
    guess = near(name, tuple(COMMANDS))
    if guess:
        return f"unknown command {name!r}; did you mean `{PROGRAM} {guess}`?"
    return f"unknown command {name!r}; `{PROGRAM} --help` lists the commands"


def _explained(spec: Command, message: str, words: list[str]) -> str:
    """argparse's message in the tool's words: which flag, what it expected, the closest real flag."""
    usage = f"see `{PROGRAM} {spec.name} --help`"
    if message.startswith("unrecognized arguments:"):
        unknown = [word for word in words if word.startswith("-") and word.split("=", 1)[0] not in spec.spellings()]
        if unknown:
            word = unknown[0].split("=", 1)[0]
            guess = near(word, tuple(spec.spellings()))
            hint = f"; did you mean {guess}?" if guess else f"; {usage}"
            return f"{PROGRAM} {spec.name}: unknown flag {word}{hint}"
        extra = message.split(":", 1)[1].strip()
        return f"{PROGRAM} {spec.name}: unexpected argument {extra!r} (values follow their flag); {usage}"
    if message.startswith("the following arguments are required:"):
        missing = [FLAGS[name] for name in spec.positional]
        named = ", ".join(f"{flag.metavar} ({flag.help})" for flag in missing)
        return f"{PROGRAM} {spec.name}: missing {named}; {usage}"
    if message.startswith("argument "):
        spelled, _, problem = message[len("argument ") :].partition(": ")
        flag = spelled.split("/")[-1]
        if problem.startswith("expected one argument"):
            metavar = FLAGS[flag.lstrip("-")].metavar if flag.lstrip("-") in FLAGS else "a value"
            return f"{PROGRAM} {spec.name}: {flag} expects {metavar} after it; {usage}"
        if problem.startswith("ignored explicit argument"):
            return f"{PROGRAM} {spec.name}: {flag} is a switch and takes no value; {usage}"
        return f"{PROGRAM} {spec.name}: {flag}: {problem}; {usage}"
    return f"{PROGRAM} {spec.name}: {message}; {usage}"


def _argument_error(message: str, as_json: bool) -> int:
    return exits.fail(message, EXIT_BAD_INPUT, as_json)


def _configured_inventory() -> tuple[str | None, str | None]:
    """`deployer: {inventory: FILE}` in this folder's invoke.yaml (a project's `inv` configuration, read
    the same way here), relative to that file; or what is wrong with that setting."""
    from deployer.locate import project_inventory  # noqa: PLC0415

    return project_inventory(os.getcwd())


def _width() -> int:
    return max(60, min(100, shutil.get_terminal_size((100, 24)).columns))


def _rows(rows: list[tuple[str, str]], indent: int = 2, left: int = 0) -> str:
    """Two columns, the second wrapped to the terminal."""
    left = left or min(30, max(len(name) for name, _ in rows) + 2)
    width = _width() - indent - left
    lines = []
    for name, text in rows:
        wrapped = textwrap.wrap(text, width) or [""]
        first = name.ljust(left) if len(name) < left else name + "\n" + " " * (indent + left)
        lines.append(" " * indent + first + wrapped[0])
        lines.extend(" " * (indent + left) + more for more in wrapped[1:])
    return "\n".join(lines)


def top_help() -> str:
    parts = [
        f"{PROGRAM} {__version__}: deploys you can undo in seconds, for fleets of VMs over SSH.",
        "",
        f"Usage: {PROGRAM} COMMAND [flags]      ({PROGRAM} COMMAND --help: its flags and examples)",
    ]
    for group, title in GROUPS:
        rows = [(spec.name, spec.summary) for spec in COMMANDS.values() if spec.group == group]
        parts += ["", f"{title}:", _rows(rows)]
    flags = [FLAGS[name] for name in ("inventory", "hosts", "group", "json", "verbose", "dry-run", "message")]
    parts += [
        "",
        "Flags most commands take:",
        _rows([(flag.spelled.strip(), flag.help) for flag in flags]),
        "",
        "Flags of the program:",
        _rows([("-h, --help", "show help (also after any command)"), ("-V, --version", "print the version")]),
        "",
        "Exit status: 0 done, 1 a host failed or the verdict is not ok, 2 bad input (nothing changed),",
        "3 refused by the plan (nothing changed), 130 interrupted. Guide and reference: README.md, docs/.",
    ]
    return "\n".join(parts)


def command_help(spec: Command) -> str:
    positional = " ".join(FLAGS[name].metavar for name in spec.positional)
    usage = f"Usage: {PROGRAM} {spec.name}{' ' + positional if positional else ''} [flags]"
    parts = [f"{PROGRAM} {spec.name}: {spec.summary}", "", usage, "", "Examples:"]
    parts += [f"  {PROGRAM} {example}" for example in spec.examples]
    if spec.positional:
        parts += ["", "Arguments:", _rows([(FLAGS[name].metavar, FLAGS[name].help) for name in spec.positional])]
    own = [name for name in spec.flag_names() if name not in spec.positional]

    sections = [
        ("Flags", [name for name in own if name not in FLEET_FLAGS and name not in LOCK_FLAGS]),
        ("Fleet flags", [name for name in own if name in FLEET_FLAGS and name not in OUTPUT_FLAGS]),
        ("Output flags", [name for name in own if name in OUTPUT_FLAGS]),
        ("Lock flags", [name for name in own if name in LOCK_FLAGS]),
    ]
    sections.append(("Help", []))
    left = min(30, max(len(FLAGS[name].spelled.strip()) for name in [*own, "json"]) + 2)
    for title, chosen in sections:
        rows = []
        for name in chosen:
            flag = FLAGS[name]
            fallback = default(spec.name, name)
            shown_default = f" (default: {fallback})" if fallback not in (None, False, True, "") else ""
            rows.append((flag.spelled.strip(), flag.help + shown_default))
        if title == "Help":
            rows.append(("-h, --help", "show this help"))
        if rows:
            parts += ["", f"{title}:", _rows(rows, left=left)]
    return "\n".join(parts)


def _completion(shell: str | None, as_json: bool) -> int:
    from deployer import completion  # noqa: PLC0415

    if shell not in completion.SHELLS:
        near_shell = near(shell or "", tuple(completion.SHELLS)) if shell else None
        hint = f"; did you mean {near_shell}?" if near_shell else ""
        return _argument_error(f"{PROGRAM} completion: SHELL must be bash or zsh, got {shell!r}{hint}", as_json)
    sys.stdout.write(completion.SHELLS[shell]())
    return 0


if __name__ == "__main__":
    main()
