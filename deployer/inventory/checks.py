"""A small schema library for the inventory: typed values out of the parsed YAML, and errors that
name the file and the key (`InventoryError`). Unknown keys are rejected, so a typo is not ignored."""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Mapping
from typing import Any

import yaml

from deployer.errors import InventoryError
from deployer.inventory.model import ENV_NAME_RE


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of keeping the last one."""


def _construct_unique_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (list, dict)):
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_unique_mapping,
)


class Checker:
    """Reads typed values out of the parsed YAML, raising errors that name file and key."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, key: str, problem: str) -> InventoryError:
        return InventoryError(self.path, key, problem)

    def mapping(self, value: Any, key: str, allowed: set[str], required: set[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(key, f"expected a mapping, got {kind(value)}")
        for name in value:
            if not isinstance(name, str):
                raise self.error(key, f"keys must be strings, got {name!r}")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.error(
                join(key, unknown[0]),
                f"unknown key (allowed here: {', '.join(sorted(allowed))})",
            )
        missing = sorted(required - set(value))
        if missing:
            raise self.error(join(key, missing[0]), "required key is missing")
        return value

    def string(self, value: Any, key: str, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
        if not isinstance(value, str) or isinstance(value, bool):
            raise self.error(key, f"expected a string, got {kind(value)}")
        if not value.strip():
            raise self.error(key, "must not be empty")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.error(key, f"{value!r} is not a valid {what}")
        return value

    def choice(self, value: Any, key: str, allowed: tuple[str, ...]) -> str:
        if value not in allowed:
            raise self.error(key, f"expected one of {', '.join(allowed)}, got {value!r}")
        return str(value)

    def number(self, value: Any, key: str, low: float, high: float, integer: bool = False) -> Any:
        ok_types: tuple[type, ...] = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_types):
            wanted = "an integer" if integer else "a number"
            raise self.error(key, f"expected {wanted} between {low:g} and {high:g}, got {kind(value)}")
        if not low <= float(value) <= high:  # type: ignore[arg-type]  # int or float, checked above
            raise self.error(key, f"must be between {low:g} and {high:g}, got {value}")
        return value

    def deploy_to(self, value: Any, key: str) -> str:
        text = self.string(value, key)
        if not text.startswith("/"):
            raise self.error(key, f"must be an absolute path, got {text!r}")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
            raise self.error(key, "must not contain control characters (tabs, newlines, NUL)")
        normal = "/" + posixpath.normpath(text).lstrip("/")
        if normal == "/" or ".." in text.split("/"):
            raise self.error(key, f"{text!r} is not a usable deploy folder (not '/', no '..')")
        return normal

    def from_environ(self, value: Any, key: str, environ: Mapping[str, str]) -> tuple[str, str]:
        """(variable name, its value) for a key naming a variable of this machine's environment."""
        source = self.string(value, key, ENV_NAME_RE, "variable name")
        if source not in environ:
            raise self.error(key, f"${source} is not set on this machine")
        return source, environ[source]

    def local_file(self, value: Any, key: str) -> str:
        text = self.string(value, key)
        path = os.path.expanduser(text)
        if not os.path.isabs(path):
            path = os.path.join(os.path.dirname(os.path.abspath(self.path)), path)
        path = os.path.normpath(path)
        if not os.path.isfile(path):
            raise self.error(key, f"file not found: {path}")
        return path


def kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key
