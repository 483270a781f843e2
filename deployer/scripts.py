"""The remote side: POSIX sh scripts shipped in `deployer/remote/`, and how to call and read them.

Each script is sent inline as one `sh -c` exec request: the deploy folder, then `name=value`
options, each quoted, so a phase costs exactly one SSH session per host and no file is left behind.
Scripts print records (`@key<TAB>field...`); everything else they print is for humans.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

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


@dataclass
class ScriptOutput:
    """What a script printed, split into records and free text."""

    records: list[tuple[str, list[str]]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def first(self, key: str) -> list[str] | None:
        for record_key, fields in self.records:
            if record_key == key:
                return fields
        return None

    def all(self, key: str) -> list[list[str]]:
        return [fields for record_key, fields in self.records if record_key == key]

    def error_message(self) -> str:
        error = self.first("error")
        if error and len(error) >= 2:
            return error[1]
        lines = [line for line in self.text if line.strip()]
        return lines[-1].strip() if lines else "no output"

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.text[-lines:])


def parse_output(raw: str) -> ScriptOutput:
    """Split script output into `@key` records and the rest."""
    output = ScriptOutput()
    for line in raw.splitlines():
        if line.startswith("@") and len(line) > 1:
            key, *fields = line[1:].split("\t")
            output.records.append((key, fields))
        else:
            output.text.append(line)
    return output
