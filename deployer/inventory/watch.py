"""The inventory's `watch` section: what is watched after a switch (Prometheus queries, alerts,
commands), for how long, how often, and what a failed or unreadable check means. Checked whole at
load: a typo in a condition or a missing token is an error naming the key, before any host is
contacted."""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from deployer.inventory.checks import Checker, kind
from deployer.inventory.model import DEFAULT_ERROR_LIMIT, DEFAULT_FAILURE_LIMIT, Condition, Watch, WatchCheck

WATCH_KEYS = {"duration", "interval", "failure_limit", "error_limit", "on_error", "checks"}
KINDS = ("prometheus", "alertmanager", "prometheus_alerts", "command", "host_command")
CHECK_KEYS = {*KINDS, "name", "query", "fail_if", "on_empty", "filter", "timeout", "bearer_token_env", "basic_auth"}
BASIC_AUTH_KEYS = {"username", "password_env"}
ON_EMPTY = ("fail", "pass", "inconclusive")
ON_ERROR = ("rollback", "hold")
CONDITION_RE = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/-]{0,63}$")


def parse_condition(check: Checker, value: Any, key: str) -> Condition:
    text = check.string(value, key)
    match = CONDITION_RE.fullmatch(text)
    if match is None:
        raise check.error(key, f'{text!r} is not a condition: write an operator and a number, e.g. "> 0.05"')
    threshold = float(match.group(2))
    if not math.isfinite(threshold):
        raise check.error(key, f"{text!r}: the threshold must be a finite number")
    return Condition(match.group(1), threshold)


def watch_section(check: Checker, value: Any, environ: Mapping[str, str]) -> Watch:
    raw = check.mapping(value, "watch", WATCH_KEYS, {"duration", "checks"})
    duration = float(check.number(raw["duration"], "watch.duration", 1, 86400))
    interval = float(check.number(raw.get("interval", min(10.0, duration)), "watch.interval", 0.5, 3600))
    if interval > duration:
        raise check.error("watch.interval", f"must not be longer than watch.duration ({duration:g}s)")
    items = raw["checks"]
    if not isinstance(items, list) or not items:
        raise check.error("watch.checks", f"expected a non-empty list of checks, got {kind(items)}")
    checks = tuple(_check(check, item, f"watch.checks[{index}]", environ) for index, item in enumerate(items))
    seen: set[str] = set()
    for index, watch_check in enumerate(checks):
        if watch_check.name in seen:
            raise check.error(f"watch.checks[{index}].name", f"{watch_check.name!r} is used by another check")
        seen.add(watch_check.name)
    return Watch(
        duration=duration,
        interval=interval,
        checks=checks,
        failure_limit=check.number(
            raw.get("failure_limit", DEFAULT_FAILURE_LIMIT), "watch.failure_limit", 1, 1000, integer=True
        ),
        error_limit=check.number(raw.get("error_limit", DEFAULT_ERROR_LIMIT), "watch.error_limit", 1, 1000, True),
        on_error=check.choice(raw.get("on_error", "rollback"), "watch.on_error", ON_ERROR),
    )


def _check(check: Checker, value: Any, key: str, environ: Mapping[str, str]) -> WatchCheck:
    raw = check.mapping(value, key, CHECK_KEYS, set())
    kinds = [name for name in KINDS if name in raw]
    if len(kinds) != 1:
        got = f" (got {', '.join(kinds)})" if kinds else ""
        raise check.error(key, f"give exactly one of {', '.join(KINDS)}{got}")
    what = kinds[0]
    target = check.string(raw[what], f"{key}.{what}")
    name = check.string(raw["name"], f"{key}.name", NAME_RE, "check name") if "name" in raw else what
    settings: dict[str, Any] = {"name": name, "kind": what, "target": target}
    allowed = {"name", what, "timeout"}
    if what in ("prometheus", "alertmanager", "prometheus_alerts"):
        settings["target"] = _url(check, target, f"{key}.{what}")
        allowed |= {"bearer_token_env", "basic_auth"}
        settings.update(_credentials(check, raw, key, environ))
    if what == "prometheus":
        allowed |= {"query", "fail_if", "on_empty"}
        for required in ("query", "fail_if", "on_empty"):
            if required not in raw:
                hint = " (fail, pass or inconclusive: what an empty result means is yours to say)"
                hint = hint if required == "on_empty" else ""
                raise check.error(f"{key}.{required}", f"required for a prometheus check{hint}")
        settings["query"] = check.string(raw["query"], f"{key}.query")
        settings["fail_if"] = parse_condition(check, raw["fail_if"], f"{key}.fail_if")
        settings["on_empty"] = check.choice(raw["on_empty"], f"{key}.on_empty", ON_EMPTY)
    if what in ("alertmanager", "prometheus_alerts"):
        allowed.add("filter")
        settings["filters"] = _filters(check, raw.get("filter", []), f"{key}.filter", what)
    extra = sorted(set(raw) - allowed)
    if extra:
        raise check.error(f"{key}.{extra[0]}", f"not a setting of a {what} check")
    settings["timeout"] = float(check.number(raw.get("timeout", 10), f"{key}.timeout", 0.1, 3600))
    return WatchCheck(**settings)


def _url(check: Checker, text: str, key: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise check.error(key, f"{text!r} is not an http:// or https:// URL")
    if parts.username or parts.password:
        raise check.error(key, "credentials do not belong in the URL: use basic_auth with password_env")
    if parts.query or parts.fragment:
        raise check.error(key, "give the server's base URL (no ?query or #fragment)")
    return text.rstrip("/")


def _credentials(check: Checker, raw: Mapping[str, Any], key: str, environ: Mapping[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    if "bearer_token_env" in raw:
        found["bearer_token"] = check.from_environ(raw["bearer_token_env"], f"{key}.bearer_token_env", environ)[1]
    if "basic_auth" in raw:
        if "bearer_token" in found:
            raise check.error(f"{key}.basic_auth", "give basic_auth or bearer_token_env, not both")
        auth = check.mapping(raw["basic_auth"], f"{key}.basic_auth", BASIC_AUTH_KEYS, BASIC_AUTH_KEYS)
        found["username"] = check.string(auth["username"], f"{key}.basic_auth.username")
        found["password"] = check.from_environ(auth["password_env"], f"{key}.basic_auth.password_env", environ)[1]
    return found


def _filters(check: Checker, value: Any, key: str, what: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise check.error(key, f"expected a matcher or a list of matchers, got {kind(value)}")
    matchers = tuple(check.string(item, f"{key}[{index}]") for index, item in enumerate(items))
    for index, matcher in enumerate(matchers):
        parsed = MATCHER_RE.fullmatch(matcher)
        if parsed is None or (what == "prometheus_alerts" and parsed.group(2) != "="):
            allowed = "=" if what == "prometheus_alerts" else "=, !=, =~ or !~"
            problem = f'{matcher!r} is not a matcher like severity="page" (here: {allowed})'
            raise check.error(f"{key}[{index}]", problem)
    return matchers


MATCHER_RE = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$')
