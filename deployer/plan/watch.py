"""The watch's judgement, without I/O: what one answer of a provider means for its check (pass,
fail, inconclusive, unreadable), and what the samples so far mean for the watch (`Tally`).

A check that failed `failure_limit` samples fails the watch; one unreadable `error_limit` times in
a row, or one that never passed by the end (only empty or unreadable answers), leaves it
undecided, and the watch's `on_error` says what then: nothing passes by default."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from deployer.inventory.model import Watch, WatchCheck
from deployer.inventory.watch import MATCHER_RE

PASS = "pass"
FAIL = "fail"
INCONCLUSIVE = "inconclusive"
ERROR = "error"  # the provider could not be read (refused, timeout, HTTP 5xx, an answer that is not one)

PASSED = "passed"
FAILED = "failed"
UNDECIDED = "undecided"
MAX_SHOWN_SERIES = 3


@dataclass(frozen=True)
class Judged:
    """What one answer says: its outcome, the value that decided it, and that value in words."""

    outcome: str
    value: float | None
    text: str


@dataclass(frozen=True)
class Sample:
    """One reading of one check, `at` seconds after the watch started."""

    check: str
    at: float
    outcome: str
    value: float | None
    text: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ProviderAnswerError(ValueError):
    """A provider's answer that is not what its API documents (the check is unreadable)."""


def judge_query(check: WatchCheck, body: Any) -> Judged:
    """A Prometheus `/api/v1/query` answer against the check's `fail_if` and `on_empty`."""
    if not isinstance(body, Mapping) or body.get("status") != "success" or not isinstance(body.get("data"), Mapping):
        raise ProviderAnswerError("not a successful Prometheus query answer")
    data = body["data"]
    kind, result = data.get("resultType"), data.get("result")
    series: list[tuple[str, float]] = []
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        series.append(("", _number(result[1])))
    elif kind == "vector" and isinstance(result, list):
        for item in result:
            if not isinstance(item, Mapping) or not isinstance(item.get("value"), list) or len(item["value"]) != 2:
                raise ProviderAnswerError("a vector sample without a [time, value] pair")
            series.append((_labels(item.get("metric")), _number(item["value"][1])))
    else:
        raise ProviderAnswerError(f"a {kind} result: write a query that returns an instant vector or a scalar")
    values = [(labels, value) for labels, value in series if not math.isnan(value)]
    if not values:
        text = "no data (empty result)" if not series else "no data (NaN: nothing to divide by)"
        outcome = {"pass": PASS, "fail": FAIL}.get(check.on_empty, INCONCLUSIVE)
        return Judged(outcome, None, text)
    condition = check.fail_if
    assert condition is not None  # a prometheus check always has one (checked at load)
    failing = [(labels, value) for labels, value in values if condition.fails(value)]
    shown = failing or values
    worst = (
        max(shown, key=lambda pair: pair[1])
        if condition.operator in (">", ">=")
        else min(shown, key=lambda pair: pair[1])
    )
    text = ", ".join(f"{value:.4g}{labels}" for labels, value in shown[:MAX_SHOWN_SERIES])
    if len(shown) > MAX_SHOWN_SERIES:
        text += f" and {len(shown) - MAX_SHOWN_SERIES} more"
    return Judged(FAIL if failing else PASS, worst[1], text)


def judge_alertmanager(check: WatchCheck, body: Any) -> Judged:  # noqa: ARG001 - one signature for every kind
    """Alertmanager's `/api/v2/alerts` (asked for active alerts only, filtered by the server): any
    alert still active there fires; silenced and inhibited ones are ignored."""
    if not isinstance(body, list):
        raise ProviderAnswerError("not a list of alerts")
    firing = []
    for alert in body:
        if not isinstance(alert, Mapping) or not isinstance(alert.get("status"), Mapping):
            raise ProviderAnswerError("an alert without a status")
        if alert["status"].get("state") == "active":
            firing.append(alert["labels"] if isinstance(alert.get("labels"), Mapping) else {})
    return _alerts(firing)


def judge_prometheus_alerts(check: WatchCheck, body: Any) -> Judged:
    """Prometheus's own `/api/v1/alerts`: firing alerts whose labels match every filter (pending
    ones have not fired yet)."""
    if not isinstance(body, Mapping) or body.get("status") != "success" or not isinstance(body.get("data"), Mapping):
        raise ProviderAnswerError("not a successful Prometheus alerts answer")
    alerts = body["data"].get("alerts")
    if not isinstance(alerts, list):
        raise ProviderAnswerError("no list of alerts")
    firing = []
    for alert in alerts:
        if not isinstance(alert, Mapping):
            raise ProviderAnswerError("an alert that is not an object")
        labels: Mapping[str, Any] = alert["labels"] if isinstance(alert.get("labels"), Mapping) else {}
        if alert.get("state") == "firing" and all(label_matches(matcher, labels) for matcher in check.filters):
            firing.append(labels)
    return _alerts(firing)


def judge_command(exit_status: int, output: str) -> Judged:
    """A command check: exit status 0 passes; the last line of its output says why otherwise."""
    last = next((line.strip() for line in reversed(output.splitlines()) if line.strip()), "")
    if exit_status == 0:
        return Judged(PASS, 0.0, "exit 0" + (f": {last}" if last else ""))
    return Judged(FAIL, float(exit_status), f"exit {exit_status}" + (f": {last}" if last else ""))


def judge_host_commands(results: Mapping[str, tuple[int, str] | str]) -> Judged:
    """A command run on each host: (exit status, last output) per host, or why a host could not
    run it. Any host's non-zero exit fails the sample; otherwise an unreachable host makes it
    unreadable (a pass must come from every host)."""
    failing = {host: found for host, found in results.items() if isinstance(found, tuple) and found[0] != 0}
    if failing:
        shown = "; ".join(
            f"{host}: exit {code}" + (f": {tail.strip()}" if tail.strip() else "")
            for host, (code, tail) in sorted(failing.items())[:MAX_SHOWN_SERIES]
        )
        more = f" and {len(failing) - MAX_SHOWN_SERIES} more" if len(failing) > MAX_SHOWN_SERIES else ""
        return Judged(FAIL, float(len(failing)), f"failing on {len(failing)}/{len(results)} host(s): {shown}{more}")
    lost = {host: found for host, found in results.items() if isinstance(found, str)}
    if lost or not results:
        host, why = sorted(lost.items())[0] if lost else ("", "no host to run it on")
        return Judged(ERROR, None, f"{host}: {why}" if host else why)
    return Judged(PASS, 0.0, f"exit 0 on {len(results)} host(s)")


def label_matches(matcher: str, labels: Mapping[str, Any]) -> bool:
    """An equality matcher (`name="value"`) against an alert's labels."""
    parsed = MATCHER_RE.fullmatch(matcher)
    if parsed is None:
        return False
    value = re.sub(r"\\(.)", r"\1", parsed.group(3))
    return labels.get(parsed.group(1)) == value


def _alerts(firing: list[Mapping[str, Any]]) -> Judged:
    if not firing:
        return Judged(PASS, 0.0, "none firing")
    names = sorted({str(labels.get("alertname", "?")) for labels in firing})
    return Judged(FAIL, float(len(firing)), f"{len(firing)} firing: {', '.join(names[:MAX_SHOWN_SERIES])}")


def _number(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ProviderAnswerError(f"a value that is not a number: {str(text)[:40]!r}") from None


def _labels(metric: Any) -> str:
    if not isinstance(metric, Mapping) or not metric:
        return ""
    shown = {key: value for key, value in metric.items() if key != "__name__"}
    return "{" + ",".join(f"{key}={value}" for key, value in sorted(shown.items())) + "}" if shown else ""


@dataclass
class _CheckCount:
    failures: int = 0
    errors_in_a_row: int = 0
    passes: int = 0
    last: Sample | None = None


@dataclass
class Tally:
    """The samples of one watch, and its verdict as soon as it is decided."""

    watch: Watch
    samples: list[Sample] = field(default_factory=list)
    counts: dict[str, _CheckCount] = field(default_factory=dict)
    verdict: str = ""  # "" while undecided and running; PASSED, FAILED or UNDECIDED
    reason: str = ""

    def add(self, sample: Sample) -> str:
        """Count one sample; the watch's verdict if it is now decided ("" otherwise)."""
        self.samples.append(sample)
        count = self.counts.setdefault(sample.check, _CheckCount())
        count.last = sample
        check = next(check for check in self.watch.checks if check.name == sample.check)
        if sample.outcome == ERROR:
            count.errors_in_a_row += 1
        else:
            count.errors_in_a_row = 0
        if sample.outcome == PASS:
            count.passes += 1
        if sample.outcome == FAIL:
            count.failures += 1
            if count.failures >= self.watch.failure_limit and not self.verdict:
                self.verdict = FAILED
                self.reason = (
                    f"watch check {check.name!r} failed {count.failures} time(s): {sample.text} "
                    f"({check.threshold_text()})"
                )
        if count.errors_in_a_row >= self.watch.error_limit and not self.verdict:
            self.verdict = UNDECIDED
            self.reason = (
                f"watch check {check.name!r} could not be read {count.errors_in_a_row} times in a row: {sample.text}"
            )
        return self.verdict

    def end(self) -> str:
        """The watch ran its whole duration: passed, unless a check never once passed."""
        if self.verdict:
            return self.verdict
        silent = [check.name for check in self.watch.checks if self.counts.get(check.name, _CheckCount()).passes == 0]
        if silent:
            self.verdict = UNDECIDED
            last = self.counts.get(silent[0], _CheckCount()).last
            why = last.text if last is not None else "no sample was taken"
            self.reason = f"watch check {silent[0]!r} never passed during the watch (last: {why})"
        else:
            self.verdict = PASSED
            self.reason = f"every check passed for {self.watch.duration:g}s"
        return self.verdict

    def last_values(self) -> list[tuple[WatchCheck, Sample | None]]:
        """Each check with its latest sample (the live view's line)."""
        return [(check, self.counts.get(check.name, _CheckCount()).last) for check in self.watch.checks]
