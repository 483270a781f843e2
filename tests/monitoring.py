"""A real Prometheus and Alertmanager (Debian's packages) for the tests of the watch: started on
loopback with a 1 s scrape of the sample app's /metrics and an alert rule on its error ratio,
stopped by pid; and a load generator sending the app requests from this machine."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ERROR_RATIO = 'sum(rate(sample_app_requests_total{code="500"}[5s])) / sum(rate(sample_app_requests_total[5s]))'


def wait_http(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.2)


@contextmanager
def monitoring(folder: Path, targets: list[str], prometheus: str, alertmanager: str) -> Iterator[dict[str, str]]:
    """Prometheus on `prometheus` (host:port) scraping `targets` every second, alerting
    SampleAppErrors (severity page, service sample) to an Alertmanager on `alertmanager`."""
    for program in ("prometheus", "prometheus-alertmanager"):
        if shutil.which(program) is None:
            pytest.fail(f"{program} is not installed (./dev.sh setup installs Debian's package)")
    listed = ", ".join(f'"{target}"' for target in targets)
    (folder / "rules.yml").write_text(
        "groups:\n- name: sample\n  rules:\n  - alert: SampleAppErrors\n"
        f"    expr: '({ERROR_RATIO}) > 0.05'\n    labels: {{severity: page, service: sample}}\n"
    )
    (folder / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [rules.yml]\n"
        f'alerting: {{alertmanagers: [{{static_configs: [{{targets: ["{alertmanager}"]}}]}}]}}\n'
        f"scrape_configs:\n- job_name: sample\n  static_configs: [{{targets: [{listed}]}}]\n"
    )
    (folder / "alertmanager.yml").write_text(
        "route: {receiver: nobody, group_wait: 0s, group_interval: 1s, repeat_interval: 1h}\n"
        "receivers: [{name: nobody}]\n"
    )
    with open(folder / "monitoring.log", "wb") as log:
        processes = [
            subprocess.Popen(
                [
                    "prometheus-alertmanager",
                    f"--config.file={folder / 'alertmanager.yml'}",
                    f"--storage.path={folder / 'am-data'}",
                    f"--web.listen-address={alertmanager}",
                    "--cluster.listen-address=",
                ],
                stdout=log,
                stderr=log,
            ),
            subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={folder / 'prometheus.yml'}",
                    f"--storage.tsdb.path={folder / 'prom-data'}",
                    f"--web.listen-address={prometheus}",
                ],
                stdout=log,
                stderr=log,
            ),
        ]
        try:
            wait_http(f"http://{alertmanager}/-/ready")
            wait_http(f"http://{prometheus}/-/ready")
            yield {"prometheus": f"http://{prometheus}", "alertmanager": f"http://{alertmanager}"}
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=30)


class Load:
    """Requests to each of `urls` in turn, every `interval` seconds, until stopped; the answers
    counted by status."""

    def __init__(self, urls: list[str], interval: float = 0.02) -> None:
        self.urls = urls
        self.interval = interval
        self.stopping = threading.Event()
        self.answers: dict[int, int] = {}
        self.thread = threading.Thread(target=self._send, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _send(self) -> None:
        while not self.stopping.is_set():
            for url in self.urls:
                try:
                    with urllib.request.urlopen(url, timeout=2) as answer:
                        code = answer.status
                except urllib.error.HTTPError as failed:
                    code = failed.code
                except OSError:
                    code = 0
                self.answers[code] = self.answers.get(code, 0) + 1
            time.sleep(self.interval)

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=10)
