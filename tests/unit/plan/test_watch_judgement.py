"""The watch's judgement (pure) and its inventory section: what each provider answer means, when a
watch fails or cannot decide, and the section's errors naming the key."""

from __future__ import annotations

import math
import textwrap

import pytest

from deployer.errors import InventoryError
from deployer.inventory import parse_inventory
from deployer.inventory.model import Condition, Watch, WatchCheck
from deployer.plan.watch import (
    ERROR,
    FAIL,
    FAILED,
    INCONCLUSIVE,
    PASS,
    PASSED,
    UNDECIDED,
    Judged,
    ProviderAnswerError,
    Sample,
    Tally,
    judge_alertmanager,
    judge_command,
    judge_host_commands,
    judge_prometheus_alerts,
    judge_query,
)

OVER_5_PERCENT = Condition(">", 0.05)


def query_check(on_empty: str = "fail", fail_if: Condition = OVER_5_PERCENT) -> WatchCheck:
    return WatchCheck("errors", "prometheus", "http://prom:9090", "q", fail_if, on_empty)


def vector(*values: str, labels: tuple[dict[str, str], ...] = ()) -> dict[str, object]:
    result = [
        {"metric": labels[index] if index < len(labels) else {}, "value": [1700000000.0, value]}
        for index, value in enumerate(values)
    ]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.mark.parametrize(
    ("values", "outcome", "worst"),
    [
        (("0.01",), PASS, 0.01),
        (("0.2",), FAIL, 0.2),
        (("0.01", "0.3", "0.1"), FAIL, 0.3),  # any series over the line fails; the worst is shown
        (("0.05",), PASS, 0.05),  # "> 0.05" is strict
        (("+Inf",), FAIL, math.inf),
    ],
)
def test_a_query_fails_when_any_series_meets_fail_if(values, outcome, worst):
    judged = judge_query(query_check(), vector(*values))
    assert (judged.outcome, judged.value) == (outcome, worst)


def test_the_failing_series_is_named_by_its_labels():
    answer = vector("0.01", "0.4", labels=({"instance": "web1"}, {"instance": "web2", "__name__": "x"}))
    judged = judge_query(query_check(), answer)
    assert judged.outcome == FAIL and judged.text == "0.4{instance=web2}"


@pytest.mark.parametrize(("rule", "outcome"), [("fail", FAIL), ("pass", PASS), ("inconclusive", INCONCLUSIVE)])
def test_an_empty_result_and_nan_follow_the_rule_the_user_chose(rule, outcome):
    assert judge_query(query_check(rule), vector()).outcome == outcome
    nan = judge_query(query_check(rule), vector("NaN"))  # 0/0: no requests at all is no data, not a pass
    assert (nan.outcome, nan.value) == (outcome, None) and "NaN" in nan.text


def test_a_lower_bound_condition_shows_the_lowest_value():
    judged = judge_query(query_check(fail_if=Condition("<", 0.99)), vector("0.999", "0.95"))
    assert (judged.outcome, judged.value) == (FAIL, 0.95)


def test_a_scalar_result_is_judged_too():
    answer = {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "0.5"]}}
    assert judge_query(query_check(), answer).outcome == FAIL


@pytest.mark.parametrize(
    "answer",
    [
        {"status": "error", "error": "x"},
        {"status": "success", "data": {"resultType": "matrix", "result": []}},
        {"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "abc"]}]}},
        {"status": "success", "data": {"resultType": "vector", "result": [{"value": "0.1"}]}},
        [],
        "text",
    ],
)
def test_an_answer_that_is_not_what_the_api_documents_is_unreadable(answer):
    with pytest.raises(ProviderAnswerError):
        judge_query(query_check(), answer)


def test_alertmanager_active_alerts_fire_silenced_and_inhibited_do_not():
    check = WatchCheck("alerts", "alertmanager", "http://am:9093")
    active = {"labels": {"alertname": "HighErrorRate"}, "status": {"state": "active"}}
    silenced = {"labels": {"alertname": "Noise"}, "status": {"state": "suppressed", "silencedBy": ["x"]}}
    assert judge_alertmanager(check, [silenced]).outcome == PASS
    judged = judge_alertmanager(check, [active, silenced])
    assert (judged.outcome, judged.value, judged.text) == (FAIL, 1.0, "1 firing: HighErrorRate")
    with pytest.raises(ProviderAnswerError):
        judge_alertmanager(check, {"data": []})


def test_prometheus_alerts_count_firing_ones_matching_every_filter():
    check = WatchCheck("alerts", "prometheus_alerts", "http://prom:9090", filters=('service="shop"',))
    alerts = [
        {"labels": {"alertname": "A", "service": "shop"}, "state": "pending"},
        {"labels": {"alertname": "B", "service": "blog"}, "state": "firing"},
    ]
    answer = {"status": "success", "data": {"alerts": alerts}}
    assert judge_prometheus_alerts(check, answer).outcome == PASS
    alerts[0]["state"] = "firing"
    assert judge_prometheus_alerts(check, answer).text == "1 firing: A"


def test_a_command_passes_on_exit_zero_and_says_its_last_line_otherwise():
    assert judge_command(0, "all good\n").outcome == PASS
    judged = judge_command(3, "checking\ncheckout returned 500\n\n")
    assert (judged.outcome, judged.text) == (FAIL, "exit 3: checkout returned 500")


WATCH = Watch(duration=60, interval=10, checks=(query_check(),), failure_limit=2, error_limit=3)


def tally_of(*outcomes: str, watch: Watch = WATCH) -> Tally:
    tally = Tally(watch)
    for index, outcome in enumerate(outcomes):
        tally.add(Sample("errors", float(index), outcome, None, f"sample {index}"))
    return tally


def test_the_watch_fails_at_the_failure_limit_not_before():
    assert tally_of(FAIL).verdict == ""
    tally = tally_of(FAIL, PASS, FAIL)
    assert tally.verdict == FAILED
    assert tally.reason == "watch check 'errors' failed 2 time(s): sample 2 (fails if > 0.05)"


def test_errors_decide_nothing_until_the_limit_in_a_row():
    assert tally_of(ERROR, ERROR, PASS, ERROR, ERROR).verdict == ""  # a readable sample resets the count
    tally = tally_of(PASS, ERROR, ERROR, ERROR)
    assert tally.verdict == UNDECIDED and "could not be read 3 times in a row" in tally.reason


def test_at_the_end_a_check_that_never_passed_leaves_the_watch_undecided():
    assert tally_of(PASS, INCONCLUSIVE, PASS).end() == PASSED
    tally = tally_of(INCONCLUSIVE, INCONCLUSIVE, ERROR)
    assert tally.end() == UNDECIDED and "never passed" in tally.reason
    assert Tally(WATCH).end() == UNDECIDED  # nothing sampled is nothing known


def test_the_first_verdict_stays():
    tally = tally_of(FAIL, FAIL, ERROR, ERROR, ERROR)
    assert tally.verdict == FAILED and tally.end() == FAILED


BASE = """\
deploy_to: /srv/app
user: deploy
ssh: {identity_file: id, known_hosts: kh}
hosts:
  web1: {address: 10.0.0.11}
"""


def parsed(tmp_path, watch: str, environ: dict[str, str] | None = None):
    (tmp_path / "id").write_text("key")
    (tmp_path / "kh").write_text("")
    text = BASE + textwrap.dedent(watch)
    return parse_inventory(text, str(tmp_path / "inv.yml"), environ or {})


def test_a_watch_section_is_read_whole(tmp_path):
    inventory = parsed(
        tmp_path,
        """\
        watch:
          duration: 300
          interval: 15
          on_error: hold
          checks:
            - name: error ratio
              prometheus: http://127.0.0.1:9090/
              query: sum(rate(errors_total[1m])) / sum(rate(requests_total[1m]))
              fail_if: "> 0.05"
              on_empty: inconclusive
              bearer_token_env: PROM_TOKEN
            - alertmanager: https://am.example:9093
              filter: ['severity="page"', 'service=~"shop|cart"']
              basic_auth: {username: deployer, password_env: AM_PASSWORD}
            - {name: smoke, command: ./smoke.sh, timeout: 30}
        """,
        {"PROM_TOKEN": "t0ken", "AM_PASSWORD": "s3cret"},
    )
    watch = inventory.watch
    assert watch is not None and (watch.duration, watch.interval, watch.on_error) == (300, 15, "hold")
    assert (watch.failure_limit, watch.error_limit) == (2, 4)
    errors, alerts, smoke = watch.checks
    assert (errors.target, errors.fail_if, errors.on_empty) == (
        "http://127.0.0.1:9090",
        Condition(">", 0.05),
        "inconclusive",
    )
    assert (alerts.name, alerts.filters, alerts.username) == (
        "alertmanager",
        ('severity="page"', 'service=~"shop|cart"'),
        "deployer",
    )
    assert (smoke.kind, smoke.target, smoke.timeout) == ("command", "./smoke.sh", 30.0)
    assert set(inventory.secrets()) >= {"t0ken", "s3cret"}  # redacted everywhere
    assert "t0ken" not in repr(errors) and "s3cret" not in repr(alerts)


@pytest.mark.parametrize(
    ("check", "key", "words"),
    [
        (
            "{prometheus: 'http://p:9090', query: up, fail_if: '> 1'}",
            "watch.checks[0].on_empty",
            "fail, pass or inconclusive",
        ),
        (
            "{prometheus: 'http://p:9090', query: up, fail_if: 'over 1', on_empty: fail}",
            "watch.checks[0].fail_if",
            "not a condition",
        ),
        (
            "{prometheus: 'http://u:pw@p:9090', query: up, fail_if: '> 1', on_empty: fail}",
            "watch.checks[0].prometheus",
            "credentials",
        ),
        (
            "{prometheus: 'p:9090', query: up, fail_if: '> 1', on_empty: fail}",
            "watch.checks[0].prometheus",
            "not an http",
        ),
        ("{command: x, query: up}", "watch.checks[0].query", "not a setting of a command check"),
        ("{command: x, alertmanager: 'http://a'}", "watch.checks[0]", "exactly one of"),
        ("{alertmanager: 'http://a', filter: ['severity page']}", "watch.checks[0].filter[0]", "not a matcher"),
        ("{prometheus_alerts: 'http://a', filter: ['a=~\"b\"']}", "watch.checks[0].filter[0]", "here: ="),
        ("{alertmanager: 'http://a', bearer_token_env: NOPE}", "watch.checks[0].bearer_token_env", "$NOPE is not set"),
        ("{command: x, timout: 3}", "watch.checks[0].timout", "unknown key"),
    ],
)
def test_watch_errors_name_the_key(tmp_path, check, key, words):
    with pytest.raises(InventoryError) as error:
        parsed(tmp_path, f"watch: {{duration: 60, checks: [{check}]}}\n")
    assert error.value.key == key and words in error.value.problem


def test_an_interval_longer_than_the_watch_and_two_checks_with_one_name_are_refused(tmp_path):
    with pytest.raises(InventoryError, match="watch.interval: must not be longer"):
        parsed(tmp_path, "watch: {duration: 10, interval: 20, checks: [{command: x}]}\n")
    with pytest.raises(InventoryError, match=r"watch.checks\[1\].name: 'command' is used by another check"):
        parsed(tmp_path, "watch: {duration: 10, checks: [{command: x}, {command: y}]}\n")


def test_a_command_on_each_host_fails_on_any_host_and_passes_only_on_all():
    assert judge_host_commands({"web1": (0, ""), "web2": (0, "ok")}) == Judged(PASS, 0.0, "exit 0 on 2 host(s)")
    failed = judge_host_commands({"web1": (0, ""), "web2": (3, "checkout 500\n"), "web3": "connection lost"})
    assert (failed.outcome, failed.value, failed.text) == (
        FAIL,
        1.0,
        "failing on 1/3 host(s): web2: exit 3: checkout 500",
    )
    lost = judge_host_commands({"web1": (0, ""), "web3": "connection lost"})
    assert (lost.outcome, lost.text) == (ERROR, "web3: connection lost")  # a pass must come from every host
