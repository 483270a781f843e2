"""The watch after the switch, against a real Prometheus and Alertmanager (Debian's packages,
started here on loopback) scraping the sample app on real sshd hosts under load: a release that
passes its health checks but fails its requests is rolled back by itself; a good one stays; each
error policy, empty results, a malformed query, Ctrl-C, and `deployer watch` on a live fleet.
Every host's state is read back over its own SSH connection and over HTTP, not from the tool."""

from __future__ import annotations

import http.server
import json
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer import operations
from deployer.inventory import load_inventory
from deployer.operations import Options
from deployer.playground.handlers import build_sample
from deployer.report import Progress
from tests.conftest import inv_process, lock_folders, run_inv
from tests.integration.render.test_html_report import browse
from tests.monitoring import ERROR_RATIO, Load, wait_http
from tests.monitoring import monitoring as running_monitoring

pytestmark = pytest.mark.fleet
QUIET = Progress(quiet=True)
APP_HOSTS = ["web1", "web4"]  # GNU userlands: the sample app's server needs python3 and curl
APP_PORT = 18080
PROMETHEUS = "127.0.0.1:19090"
ALERTMANAGER = "127.0.0.1:19093"


@pytest.fixture(scope="module")
def monitoring(local_fleet, tmp_path_factory) -> Iterator[dict[str, str]]:
    """Prometheus scraping each app host's sample app every second, and Alertmanager (tests/monitoring.py)."""
    targets = [f"{host.address}:{APP_PORT}" for host in local_fleet.hosts() if host.name in APP_HOSTS]
    with running_monitoring(tmp_path_factory.mktemp("monitoring"), targets, PROMETHEUS, ALERTMANAGER) as urls:
        yield urls


class App:
    """The sample app's server on each host (started over SSH as the deploy user, reloaded by the
    deploy's hooks) and a load generator on this machine sending it requests."""

    def __init__(self, fleet, views, deploy_to: str) -> None:
        self.views = {name: views[name] for name in APP_HOSTS}
        self.addresses = {host.name: host.address for host in fleet.hosts() if host.name in APP_HOSTS}
        self.deploy_to = deploy_to
        self.load = Load([f"http://{address}:{APP_PORT}/" for address in self.addresses.values()])

    @property
    def answers(self) -> dict[int, int]:
        return self.load.answers

    def start(self) -> None:
        for name, view in self.views.items():
            address = self.addresses[name]
            view.sh(
                f"cd {self.deploy_to} && echo {address} > serve.address && "
                f"setsid nohup python3 current/bin/serve --port {APP_PORT} --bind {address} "
                f"--app {self.deploy_to}/current > serve.log 2>&1 < /dev/null & echo $! > {self.deploy_to}/serve.pid"
            )
        for address in self.addresses.values():
            wait_http(f"http://{address}:{APP_PORT}/health", 30)
        self.load.start()

    def serving(self) -> dict[str, str]:
        """The release each host's server says it serves (its /health, over HTTP)."""
        found = {}
        for name, address in self.addresses.items():
            with urllib.request.urlopen(f"http://{address}:{APP_PORT}/health", timeout=5) as answer:
                found[name] = answer.read().decode().split("release=")[1].split()[0]
        return found

    def stop(self) -> None:
        self.load.stop()
        for view in self.views.values():
            view.host.run(f"test -f {self.deploy_to}/serve.pid && kill $(cat {self.deploy_to}/serve.pid)")


@pytest.fixture
def app(local_fleet, views, deploy_to) -> Iterator[App]:
    running = App(local_fleet, views, deploy_to)
    yield running
    running.stop()


APP_SETTINGS = f"""\
hooks:
  after_switch: 'kill -HUP "$(cat ../../serve.pid)" 2>/dev/null || true'
  after_rollback: 'kill -HUP "$(cat ../../serve.pid)" 2>/dev/null || true'
  after_rollback_local: 'echo "$DEPLOYER_OPERATION $DEPLOYER_RELEASE $DEPLOYER_PREVIOUS" > rolled-back.txt'
health_check:
  command: 'sh bin/health {APP_PORT} "$(cat ../../serve.address)"'
  timeout: 5
  retries: 10
  interval: 0.5
"""


def watch_settings(checks: str, duration: float = 20, interval: float = 1, extra: str = "") -> str:
    return f"watch:\n  duration: {duration}\n  interval: {interval}\n{extra}  checks:\n{checks}"


def query_check(name: str, url: str, query: str, fail_if: str, on_empty: str) -> str:
    return (
        f"    - name: {name}\n      prometheus: {url}\n"
        f"      query: '{query}'\n      fail_if: '{fail_if}'\n      on_empty: {on_empty}\n"
    )


def error_ratio_check(monitoring: dict[str, str]) -> str:
    return query_check("error ratio", monitoring["prometheus"], ERROR_RATIO, "> 0.05", "inconclusive")


def alerts_check(monitoring: dict[str, str]) -> str:
    return (
        f"    - name: alerts\n      alertmanager: {monitoring['alertmanager']}\n      filter: ['service=\"sample\"']\n"
    )


def wait_until_no_alert_fires(monitoring: dict[str, str]) -> None:
    """An earlier test's broken release may have left the alert firing until its window passed."""
    deadline = time.monotonic() + 60
    while True:
        with urllib.request.urlopen(f"{monitoring['alertmanager']}/api/v2/alerts?active=true", timeout=5) as answer:
            if not json.loads(answer.read()):
                return
        assert time.monotonic() < deadline, "an alert kept firing"
        time.sleep(0.5)


def baseline(inventory: str, *artifacts: str, app: App | None = None) -> list[str]:
    """These releases deployed in turn, without a watch (nor, before its server runs, hooks or a
    health check), then the app's server started; their ids, oldest first."""
    releases = []
    for artifact in artifacts:
        options = Options(no_watch=True)
        report = operations.deploy(load_inventory(inventory), artifact, options=options, progress=QUIET)
        assert report.ok, report.verdict()
        releases.append(report.target or "")
    if app is not None:
        app.start()
    return releases


@pytest.fixture
def fourth(tmp_path) -> str:
    """A fourth release: deployed after three, keep_releases 1 lets its verdict prune the oldest."""
    return build_sample("v4", str(tmp_path / "app-v4.tar.gz"))


def currents(views, names, deploy_to):
    return {name: views[name].current_release(deploy_to) for name in names}


def bad_mark(view, deploy_to, release):
    found = view.host.run("cat %s", f"{deploy_to}/.deployer/bad/{release}")
    return json.loads(found.stdout) if found.rc == 0 else None


def test_a_release_that_passes_its_health_checks_but_fails_its_requests_is_rolled_back_by_itself(
    make_inventory, views, artifacts, deploy_to, app, monitoring, tmp_path
):
    watch = watch_settings(error_ratio_check(monitoring) + alerts_check(monitoring))
    inventory = make_inventory(hosts=APP_HOSTS, extra=APP_SETTINGS + watch)
    (good,) = baseline(make_inventory(hosts=APP_HOSTS), artifacts["v1"], app=app)
    wait_until_no_alert_fires(monitoring)
    broken = build_sample("v2", str(tmp_path / "broken.tar.gz"), broken=True)

    result = run_inv("deploy", "-i", inventory, "-a", broken, "--json")

    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    new = report["target"]
    assert {host["status"] for host in report["hosts"]} == {"reverted"}
    assert all("health" in host["message"] or "reverted" in host["message"] for host in report["hosts"])
    (watched,) = report["watches"]
    assert watched["verdict"] == "failed" and watched["label"] == "the fleet"
    failing = [sample for sample in watched["samples"] if sample["outcome"] == "fail"]
    assert failing and all(sample["check"] in ("error ratio", "alerts") for sample in failing)
    ratio = [sample["value"] for sample in failing if sample["check"] == "error ratio"]
    assert all(value > 0.05 for value in ratio)
    assert [phase["name"] for phase in report["phases"]][-3:] == ["watch the fleet", "revert", "after_rollback_local"]

    # Independently: every host serves the previous release again (its server, over HTTP, and its
    # link, over SSH), the broken one is marked bad with the check and its condition, no lock left.
    assert currents(views, APP_HOSTS, deploy_to) == dict.fromkeys(APP_HOSTS, good)
    assert app.serving() == dict.fromkeys(APP_HOSTS, good)
    for name in APP_HOSTS:
        why = bad_mark(views[name], deploy_to, new)["why"]
        assert "watch check" in why and ("> 0.05" in why or "alert fires" in why), why
        assert views[name].host.run("test -d %s", f"{deploy_to}/.deployer/lock").rc == 1
        assert new in views[name].releases(deploy_to)  # kept for inspection, not pruned
    assert app.answers.get(500, 0) > 0  # the load really met the broken release
    # the local rollback hook ran (here, beside the inventory), told what was reverted to what
    assert (Path(inventory).parent / "rolled-back.txt").read_text().split() == ["revert", good, new]

    # The HTML report draws each check's samples over time with its threshold, failures in red,
    # the switch and the revert marked (read in a real browser's DOM).
    (tmp_path / "run.json").write_text(result.stdout)
    made = run_inv("report", str(tmp_path / "run.json"), "--out", str(tmp_path / "run.html"))
    assert made.returncode == 0, made.stderr
    dom = browse(tmp_path / "run.html", "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    assert dom.stdout.count('class="watch-check"') == 2  # error ratio, alerts
    assert dom.stdout.count('class="threshold"') == 1  # the error ratio's 0.05
    assert dom.stdout.count('class="sample fail"') == len(failing)
    assert ">switched<" in dom.stdout and ">revert<" in dom.stdout


def test_a_good_release_passes_its_watch_under_the_lock_and_stays(
    make_inventory, views, artifacts, deploy_to, app, monitoring, fourth
):
    watch = watch_settings(error_ratio_check(monitoring) + alerts_check(monitoring), duration=8)
    inventory = make_inventory(hosts=APP_HOSTS, extra=APP_SETTINGS + watch + "keep_releases: 1\n")
    three = (artifacts[version] for version in ("v1", "v2", "v3"))
    oldest, _, _ = baseline(make_inventory(hosts=APP_HOSTS), *three, app=app)
    wait_until_no_alert_fires(monitoring)

    process = inv_process("deploy", "-i", inventory, "-a", fourth, "--json")
    seen = []
    for line in process.stderr:  # the progress: wait until the watch has started
        seen.append(line)
        if "watching the fleet" in line:
            break
    assert any("watching the fleet" in line for line in seen), "".join(seen)
    # While the watch runs: every host still locked, another deploy refused, nothing pruned yet.
    assert lock_folders({name: views[name] for name in APP_HOSTS}, deploy_to) == dict.fromkeys(APP_HOSTS, True)
    other = run_inv("deploy", "-i", inventory, "-a", artifacts["v3"])
    assert other.returncode == 3 and "lock" in other.stderr.lower(), other.stderr
    assert all(oldest in views[name].releases(deploy_to) for name in APP_HOSTS)
    out, rest = process.communicate(timeout=120)
    assert process.returncode == 0, "".join(seen) + rest

    report = json.loads(out)
    (watched,) = report["watches"]
    assert watched["verdict"] == "passed"
    assert {sample["outcome"] for sample in watched["samples"]} <= {"pass", "inconclusive"}
    assert {sample["check"] for sample in watched["samples"] if sample["outcome"] == "pass"} == {
        "error ratio",
        "alerts",
    }
    new = report["target"]
    assert currents(views, APP_HOSTS, deploy_to) == dict.fromkeys(APP_HOSTS, new)
    assert app.serving() == dict.fromkeys(APP_HOSTS, new)
    for name in APP_HOSTS:  # after the verdict: the lock released, the oldest release pruned
        assert views[name].host.run("test -d %s", f"{deploy_to}/.deployer/lock").rc == 1
        assert oldest not in views[name].releases(deploy_to)
        assert bad_mark(views[name], deploy_to, new) is None


def test_deployer_watch_rolls_a_live_broken_fleet_back_on_a_firing_alert(
    make_inventory, views, artifacts, deploy_to, app, monitoring, tmp_path
):
    inventory = make_inventory(hosts=APP_HOSTS, extra=APP_SETTINGS + watch_settings(alerts_check(monitoring)))
    (good,) = baseline(make_inventory(hosts=APP_HOSTS), artifacts["v1"], app=app)
    wait_until_no_alert_fires(monitoring)
    broken = build_sample("v2", str(tmp_path / "broken.tar.gz"), broken=True)
    shipped = run_inv("deploy", "-i", inventory, "-a", broken, "--no-watch", "--json")
    assert shipped.returncode == 0, shipped.stderr  # its health checks pass: nothing noticed it
    bad = json.loads(shipped.stdout)["target"]

    result = run_inv("watch", "-i", inventory, "--json")

    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["watches"][0]["verdict"] == "failed"
    assert "SampleAppErrors" in report["watches"][0]["reason"]
    assert currents(views, APP_HOSTS, deploy_to) == dict.fromkeys(APP_HOSTS, good)
    assert app.serving() == dict.fromkeys(APP_HOSTS, good)
    for name in APP_HOSTS:
        assert "SampleAppErrors" in bad_mark(views[name], deploy_to, bad)["why"]
        assert views[name].host.run("test -f %s", f"{deploy_to}/.deployer/pin").rc == 0  # as a rollback does


def test_a_malformed_query_is_refused_before_anything_is_staged(
    make_inventory, views, artifacts, deploy_to, monitoring
):
    check = query_check("typo", monitoring["prometheus"], "sum(rate(", "> 1", "fail")
    inventory = make_inventory(hosts=["web1", "web2"], extra=watch_settings(check))
    (old,) = baseline(inventory, artifacts["v1"])

    result = run_inv("deploy", "-i", inventory, "-a", artifacts["v2"])

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{inventory}: watch.checks[0].query: Prometheus refused the query of watch check 'typo'" in result.stderr
    for name in ("web1", "web2"):
        assert views[name].current_release(deploy_to) == old
        assert views[name].releases(deploy_to) == [old]
        assert views[name].host.run("test -d %s", f"{deploy_to}/.deployer/lock").rc == 1


# inconclusive all along: the check never passed, the watch decided nothing, on_error (rollback) applies
@pytest.mark.parametrize(
    ("rule", "code", "where"), [("pass", 0, "new"), ("fail", 1, "old"), ("inconclusive", 1, "old")]
)
def test_an_empty_result_follows_the_rule_the_user_chose(
    make_inventory, views, artifacts, deploy_to, monitoring, rule, code, where
):
    check = query_check("absent", monitoring["prometheus"], "sum(rate(no_such_metric_total[5s]))", "> 0", rule)
    inventory = make_inventory(hosts=["web1", "web2"], extra=watch_settings(check, duration=2, interval=0.5))
    (old,) = baseline(inventory, artifacts["v1"])

    result = run_inv("deploy", "-i", inventory, "-a", artifacts["v2"], "--json")

    assert result.returncode == code, result.stdout + result.stderr
    report = json.loads(result.stdout)
    samples = report["watches"][0]["samples"]
    assert samples and all(sample["text"] == "no data (empty result)" for sample in samples)
    expected = report["target"] if where == "new" else old
    assert {views[name].current_release(deploy_to) for name in ("web1", "web2")} == {expected}
    if rule == "inconclusive":
        assert "never passed during the watch" in report["verdict"] and "on_error: rollback" in report["verdict"]


class _Answers503(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(503)
        self.end_headers()
        self.wfile.write(b"overloaded")

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def unavailable() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers503)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("policy", ["rollback", "hold"])
@pytest.mark.parametrize("provider", ["refused", "503"])
def test_an_unreadable_provider_is_neither_a_pass_nor_silently_a_failure(
    make_inventory, views, artifacts, deploy_to, unavailable, fourth, provider, policy
):
    """error_limit unreadable samples in a row make the watch undecidable; on_error says what then:
    rollback reverts the fleet (the release marked bad, the reason said); hold leaves it switched,
    marks and prunes nothing, releases the lock, exits 1 and says how to roll back."""
    url, how = (
        ("http://127.0.0.1:1", "connection refused") if provider == "refused" else (unavailable, "HTTP 503: overloaded")
    )
    check = query_check("metrics", url, "up", "< 1", "fail")
    settings = watch_settings(check, duration=30, interval=0.5, extra=f"  error_limit: 3\n  on_error: {policy}\n")
    inventory = make_inventory(hosts=["web1", "web2"], extra=settings + "keep_releases: 1\n")
    three = (artifacts[version] for version in ("v1", "v2", "v3"))
    oldest, _, old = baseline(make_inventory(hosts=["web1", "web2"]), *three)

    result = run_inv("deploy", "-i", inventory, "-a", fourth, "--json")

    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert [sample["outcome"] for sample in report["watches"][0]["samples"]] == ["error"] * 3
    assert f"could not be read 3 times in a row: {how}; on_error: {policy}" in report["verdict"]
    new = report["target"]
    for name in ("web1", "web2"):
        assert views[name].host.run("test -d %s", f"{deploy_to}/.deployer/lock").rc == 1
        assert oldest in views[name].releases(deploy_to)  # no verdict: nothing pruned
        if policy == "rollback":
            assert views[name].current_release(deploy_to) == old
            assert how in bad_mark(views[name], deploy_to, new)["why"]
        else:  # switched and left so, said so; nothing marked
            assert views[name].current_release(deploy_to) == new
            assert bad_mark(views[name], deploy_to, new) is None
    assert ("back where it was" in report["verdict"]) == (policy == "rollback")
    assert ("inv rollback" in report["verdict"]) == (policy == "hold")


def test_ctrl_c_during_the_watch_rolls_nothing_back_and_says_how_to(
    make_inventory, views, artifacts, deploy_to, fourth
):
    settings = watch_settings("    - {name: smoke, command: 'sleep 0.2'}\n", duration=120, interval=0.5)
    inventory = make_inventory(hosts=["web1", "web2"], extra=settings + "keep_releases: 1\n")
    three = (artifacts[version] for version in ("v1", "v2", "v3"))
    oldest, _, old = baseline(make_inventory(hosts=["web1", "web2"]), *three)

    process = inv_process("deploy", "-i", inventory, "-a", fourth)
    seen = []
    for line in process.stderr:
        seen.append(line)
        if "watch the fleet:" in line:  # a first sample was taken
            break
    process.send_signal(signal.SIGINT)
    out, rest = process.communicate(timeout=60)
    said = "".join(seen) + rest + out

    assert process.returncode == 130, said
    assert "cut short" in said and "inv rollback" in said, said
    for name in ("web1", "web2"):
        release = views[name].current_release(deploy_to)
        assert release != old and release is not None  # still switched: nothing was rolled back
        assert oldest in views[name].releases(deploy_to)  # nor pruned
        assert views[name].host.run("test -d %s", f"{deploy_to}/.deployer/lock").rc == 1
        assert views[name].host.run("ls %s", f"{deploy_to}/.deployer/bad").stdout.strip() == ""


def test_the_drill_watches_its_deploy_and_its_redeploy(make_inventory, views, artifacts, deploy_to, tmp_path):
    """In an integration environment the drill watches each deploy phase as a deploy does: a check
    that fails only for the drilled release fails the drill's deploy phase, and the fleet is put
    back where the drill found it."""
    seen = tmp_path / "watched"
    check = f"    - {{name: smoke, command: 'echo $DEPLOYER_RELEASE >> {seen}; test ! -e {tmp_path}/broken'}}\n"
    inventory = make_inventory(hosts=["web1", "web2"], extra=watch_settings(check, duration=1, interval=0.5))
    (old,) = baseline(inventory, artifacts["v1"])

    passed = run_inv("rollback-drill", "-i", inventory, "-a", artifacts["v2"], "--no-verify", "--json")

    assert passed.returncode == 0, passed.stdout + passed.stderr
    report = json.loads(passed.stdout)
    assert [watched["verdict"] for watched in report["watches"]] == ["passed", "passed"]
    drilled = {watched["release"] for watched in report["watches"]}
    assert len(drilled) == 1 and drilled != {old}
    assert set(seen.read_text().split()) == drilled  # the command ran, told which release it watched

    (tmp_path / "broken").write_text("")
    failed = run_inv("rollback-drill", "-i", inventory, "-a", artifacts["v3"], "--no-verify", "--json")

    assert failed.returncode == 1, failed.stdout + failed.stderr
    report = json.loads(failed.stdout)
    assert report["watches"][0]["verdict"] == "failed"
    assert "watch check 'smoke' failed" in report["verdict"]
    live = views["web1"].current_release(deploy_to)
    assert {views[name].current_release(deploy_to) for name in ("web1", "web2")} == {live} and live in drilled


def test_a_command_on_each_host_fails_the_watch_when_it_fails_on_one(make_inventory, views, artifacts, deploy_to):
    """`host_command` runs in the watched release on every host at once, over the deploy's own
    connections (one per host, also for the watch), on GNU and POSIX-strict userlands alike;
    failing on web3 reverts both hosts. Its runs stay out of the history."""
    check = "    - {name: local smoke, host_command: 'test \"$(hostname)\" != web3 || { echo cart empty; exit 4; }'}\n"
    inventory = make_inventory(hosts=["web1", "web3"], extra=watch_settings(check, duration=5, interval=0.5))
    (old,) = baseline(inventory, artifacts["v1"])

    result = run_inv("deploy", "-i", inventory, "-a", artifacts["v2"], "--json")

    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert "failing on 1/2 host(s): web3: exit 4: cart empty" in report["verdict"]
    assert report["connections"] == 2  # the watch's runs used the deploy's connections
    new = report["target"]
    for name in ("web1", "web3"):
        assert views[name].current_release(deploy_to) == old
        assert "web3: exit 4: cart empty" in bad_mark(views[name], deploy_to, new)["why"]
        history = views[name].sh("cat %s", f"{deploy_to}/.deployer/history.jsonl").splitlines()
        assert [json.loads(line)["op"] for line in history] == ["deploy", "deploy", "revert"]
