"""What a command line is made of, whichever front end parsed it: a flag's kind and how it is shown,
the checked values a handler gets, and the argument error (exit 2) with its "did you mean". The table
of commands and flags built from these is deployer/commands.py."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from deployer.errors import InputError


class ArgumentProblem(InputError):
    """A command line the tool cannot take: unknown command or flag, a value of the wrong kind (exit 2)."""


@dataclass(frozen=True)
class Flag:
    """One flag: `kind` is "text", "count" (a whole number in [low, high]), "seconds" or "switch"."""

    name: str
    help: str
    kind: str = "text"
    metavar: str = ""
    short: str = ""
    default: Any = None
    low: int = 0
    high: int = 0

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")

    @property
    def takes_value(self) -> bool:
        return self.kind != "switch"

    @property
    def spelled(self) -> str:
        """`-i, --inventory FILE` as help shows it."""
        long = f"--{self.name}"
        if self.kind == "switch" and self.default is True:
            long = f"--{self.name} / --no-{self.name}"
        value = f" {self.metavar or self.name.upper()}" if self.takes_value else ""
        return (f"-{self.short}, " if self.short else "    ") + long + value


@dataclass
class Values:
    """A command's checked values, by attribute (`values.dry_run`), whichever front end parsed them."""

    command: str
    given: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["given"][name]
        except KeyError:
            raise AttributeError(name) from None


def checked(flag: Flag, given: Any, fallback: Any) -> Any:
    """`given` as `flag`'s kind takes it (`fallback` when not given); ArgumentProblem when it is not one."""
    if flag.kind == "switch":
        return bool(given) if given is not None else bool(fallback)
    if given is None or given == "":
        return fallback
    text = str(given)
    if flag.kind == "count":
        if not text.strip().isdigit() or not flag.low <= int(text) <= flag.high:
            raise ArgumentProblem(f"--{flag.name} expects a whole number from {flag.low} to {flag.high}, got {text!r}")
        return int(text)
    if flag.kind == "seconds":
        try:
            number = float(text)
        except ValueError:
            number = -1.0
        if not 0 <= number <= 86400:
            raise ArgumentProblem(f"--{flag.name} expects seconds from 0 to 86400, got {text!r}")
        return number
    return text


def names(value: str | None) -> tuple[str, ...]:
    """`web1, web2` -> ("web1", "web2")."""
    return tuple(name.strip() for name in (value or "").split(",") if name.strip())


def near(word: str, choices: list[str] | tuple[str, ...]) -> str | None:
    """The closest of `choices` to a mistyped `word`, if one is close enough to suggest."""
    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return found[0] if found else None
