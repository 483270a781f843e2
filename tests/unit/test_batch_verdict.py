"""The last batch's verdict, given to the switch sessions waiting for it: all passed (commit), one
failed or ended without passing (hold), or the operation stopped (hold, at once)."""

from __future__ import annotations

import threading
import time

from deployer.phases.switch import BatchVerdict


def waiting(
    verdict: BatchVerdict, hosts: list[str], seconds: float = 30
) -> tuple[dict[str, bool], list[threading.Thread]]:
    answers: dict[str, bool] = {}
    deadline = time.monotonic() + seconds

    def wait(host: str) -> None:
        answers[host] = verdict.ready(host, deadline)

    threads = [threading.Thread(target=wait, args=(host,)) for host in hosts]
    for thread in threads:
        thread.start()
    return answers, threads


def test_every_host_passed_commits_and_one_that_ended_without_passing_holds():
    verdict = BatchVerdict(["web1", "web2", "web3"])
    answers, threads = waiting(verdict, ["web1", "web2", "web3"])
    for thread in threads:
        thread.join(timeout=10)
    assert answers == {"web1": True, "web2": True, "web3": True}

    verdict = BatchVerdict(["web1", "web2", "web3"])
    answers, threads = waiting(verdict, ["web1", "web2"])
    verdict.end("web3")  # its session ended (failed) without passing
    for thread in threads:
        thread.join(timeout=10)
    assert answers == {"web1": False, "web2": False}


def test_a_stopped_operation_releases_the_waiting_sessions_at_once_with_hold():
    """Ctrl-C before web3's session ever started (seen in CI: the others waited 90 s, their limit)."""
    verdict = BatchVerdict(["web1", "web2", "web3"])
    answers, threads = waiting(verdict, ["web1", "web2"], seconds=60)
    time.sleep(0.2)
    started = time.monotonic()
    verdict.abandon()
    for thread in threads:
        thread.join(timeout=10)
    assert time.monotonic() - started < 5
    assert answers == {"web1": False, "web2": False}
