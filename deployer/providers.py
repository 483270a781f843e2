"""Reading the watch's checks from this machine: Prometheus's HTTP API (`/api/v1/query`,
`/api/v1/alerts`), Alertmanager's (`/api/v2/alerts`) and commands run here. Each read is bounded by
its check's timeout and ends as a `Judged` answer; an unreadable provider (refused, timed out,
HTTP 5xx, an answer that is not what the API documents) is an ERROR sample, never a pass. What a
provider sent is data: parsed as JSON, capped, and only shown through the report's boundary."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from deployer.errors import InputError
from deployer.inventory.model import WatchCheck
from deployer.plan.watch import (
    ERROR,
    Judged,
    ProviderAnswerError,
    judge_alertmanager,
    judge_command,
    judge_prometheus_alerts,
    judge_query,
)

MAX_ANSWER = 4 * 1024 * 1024  # bytes read from a provider's answer
MAX_COMMAND_OUTPUT = 64 * 1024


class BadQuery(InputError):
    """Prometheus refused a query as malformed (HTTP 400 or 422): refused before any host switches."""


class _Unreadable(Exception):
    """The provider could not be read; the message says how, in a few words."""


def read_check(check: WatchCheck, environment: Mapping[str, str] | None = None) -> Judged:
    """One reading of `check`, judged; an unreadable provider is an ERROR answer saying why."""
    try:
        if check.kind == "command":
            return _command(check, environment or {})
        return _judge(check, _get(check, *_request(check)))
    except _Unreadable as unreadable:
        return Judged(ERROR, None, str(unreadable))
    except ProviderAnswerError as odd:
        return Judged(ERROR, None, f"unexpected answer: {odd}")


def check_query(check: WatchCheck) -> str:
    """Ask Prometheus the check's query once, before any host switches. Raises BadQuery when it is
    refused as malformed; returns "" when it answered, else why it could not be read (the watch's
    error policy will decide about that one, not this)."""
    if check.kind != "prometheus":
        return ""
    try:
        _get(check, *_request(check))
    except _Unreadable as unreadable:
        return str(unreadable)
    return ""


def _request(check: WatchCheck) -> tuple[str, list[tuple[str, str]]]:
    if check.kind == "prometheus":
        return "/api/v1/query", [("query", check.query)]
    if check.kind == "prometheus_alerts":
        return "/api/v1/alerts", []
    parameters = [("active", "true"), ("silenced", "false"), ("inhibited", "false"), ("unprocessed", "false")]
    return "/api/v2/alerts", parameters + [("filter", matcher) for matcher in check.filters]


def _judge(check: WatchCheck, body: Any) -> Judged:
    if check.kind == "prometheus":
        return judge_query(check, body)
    if check.kind == "prometheus_alerts":
        return judge_prometheus_alerts(check, body)
    return judge_alertmanager(check, body)


def _get(check: WatchCheck, path: str, parameters: list[tuple[str, str]]) -> Any:
    url = check.target + path + ("?" + urllib.parse.urlencode(parameters) if parameters else "")
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "deployer-watch"})
    if check.bearer_token:
        request.add_header("Authorization", f"Bearer {check.bearer_token}")
    elif check.username:
        pair = base64.b64encode(f"{check.username}:{check.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {pair}")
    try:
        with _opener.open(request, timeout=check.timeout) as answer:
            raw = answer.read(MAX_ANSWER + 1)
    except urllib.error.HTTPError as refused:
        detail = _error_detail(refused)
        if check.kind == "prometheus" and refused.code in (400, 422):
            raise BadQuery(f"Prometheus refused the query of watch check {check.name!r}: {detail}") from None
        raise _Unreadable(f"HTTP {refused.code}" + (f": {detail}" if detail else "")) from None
    except (urllib.error.URLError, OSError) as failed:
        reason = getattr(failed, "reason", failed)
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise _Unreadable(f"no answer within {check.timeout:g}s") from None
        if isinstance(reason, ConnectionRefusedError):
            raise _Unreadable("connection refused") from None
        raise _Unreadable(f"cannot reach it: {reason}") from None
    if len(raw) > MAX_ANSWER:
        raise _Unreadable(f"answer larger than {MAX_ANSWER} bytes")
    try:
        return json.loads(raw)
    except ValueError:
        raise _Unreadable("the answer is not JSON") from None


def _error_detail(refused: urllib.error.HTTPError) -> str:
    """The `error` field of a Prometheus error answer, else the start of the body."""
    try:
        body = refused.read(64 * 1024)
    except OSError:
        return ""
    try:
        parsed = json.loads(body)
        if isinstance(parsed, Mapping) and isinstance(parsed.get("error"), str):
            return parsed["error"][:300]
    except ValueError:
        pass
    return body.decode("utf-8", "replace").strip()[:300]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A provider that redirects is misconfigured: the credentials must not follow it elsewhere."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def _command(check: WatchCheck, environment: Mapping[str, str]) -> Judged:
    """A command on this machine, in its own process group (all of it stopped at its timeout)."""
    process = subprocess.Popen(
        ["sh", "-c", check.target],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **environment},
    )
    try:
        output, _ = process.communicate(timeout=check.timeout)
    except subprocess.TimeoutExpired:
        _stop_group(process)
        raise _Unreadable(f"did not finish within {check.timeout:g}s") from None
    except BaseException:  # Ctrl-C: the command goes with the watch
        _stop_group(process)
        raise
    text = output[-MAX_COMMAND_OUTPUT:].decode("utf-8", "replace")
    return judge_command(process.returncode, text)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
