"""What a person sees on a real terminal: the CLI run inside tmux at fixed sizes, the screen read
with `tmux capture-pane` (rendered text, as on the glass), during the run and after it."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.fleet


class Terminal:
    """One tmux server of this test's own (its own socket), one window of a fixed size."""

    def __init__(self, columns: int, lines: int) -> None:
        self.socket = f"deployer-test-{os.getpid()}-{columns}x{lines}"
        self.size = (columns, lines)

    def tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True)
        return done.stdout

    def start(self, *cli: str) -> None:
        command = " ".join(shlex.quote(part) for part in (sys.executable, "-m", "invoke", *cli))
        # the window's size, not one inherited from the test run (pytest's environment has COLUMNS/LINES)
        shell = f"unset COLUMNS LINES; cd {shlex.quote(str(REPO))} && {command}; echo EXIT=$?; sleep 600"
        columns, lines = self.size
        self.tmux("new-session", "-d", "-x", str(columns), "-y", str(lines), "-e", "TERM=xterm-256color", shell)

    def screen(self) -> str:
        """What the window shows now."""
        return self.tmux("capture-pane", "-p")

    def everything(self) -> str:
        """The window and its scrollback."""
        return self.tmux("capture-pane", "-p", "-S", "-")

    def wait_for(self, pattern: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.everything()
            if re.search(pattern, screen):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} never appeared; the screen:\n{self.everything()}")

    def watch(self, until: Callable[[str], object], timeout: float = 120) -> list[str]:
        """Every distinct screen shown until one satisfies `until` (that one last)."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            screen = self.screen()
            if not seen or seen[-1] != screen:
                seen.append(screen)
            if until(screen):
                return seen
            time.sleep(0.05)
        raise AssertionError(f"the awaited screen never appeared; the last one:\n{self.everything()}")

    def stop(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, check=False)


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    opened: list[Terminal] = []

    def make(columns: int, lines: int) -> Terminal:
        opened.append(Terminal(columns, lines))
        return opened[-1]

    yield make  # type: ignore[misc]
    for one in opened:
        one.stop()


def validating_for(screen: str, host: str) -> float | None:
    """The time on the host's row of the live view while it says validating, else None."""
    match = re.search(rf"^{host}\s+validating\s+.*?(\d+\.\d)s", screen, re.MULTILINE)
    return float(match.group(1)) if match else None


@pytest.mark.parametrize("size", [(80, 24), (140, 40)])
def test_live_view_and_final_table_on_a_real_terminal(make_inventory, artifacts, views, deploy_to, terminal, size):
    columns, _lines = size
    inventory = make_inventory(validate="sleep 3 && test -f VERSION")
    window = terminal(*size)
    window.start("deploy", "--inventory", inventory, "--artifact", artifacts["v1"])

    # Validation takes 3 s: the view names the step on every host's row and its timers keep running (it
    # does not look hung). Hosts reach validation at their own pace, so each is watched for on its own.
    screens = window.watch(until=lambda screen: validating_for(screen, "web1") is not None)
    started = validating_for(screens[-1], "web1")
    assert started is not None

    def advanced(screen: str) -> bool:  # web1's row still says validating, its timer half a second on
        shown = validating_for(screen, "web1")
        return shown is not None and shown >= started + 0.5

    screens += window.watch(until=lambda screen: advanced(screen) or "EXIT=" in screen)
    assert advanced(screens[-1]), screens[-1]
    screens += window.watch(until=lambda screen: "EXIT=" in screen)
    for n in range(1, 5):
        assert any(re.search(rf"^web{n}\s+validating\s", screen, re.MULTILINE) for screen in screens), n
    # each step is timed on its own: after 3 s of validation, the next step's timer starts again from 0
    switching = re.compile(r"^web\d\s+switching\S*\s+(\d+\.\d)s", re.MULTILINE)
    later = [float(found.group(1)) for screen in screens for found in switching.finditer(screen)]
    assert all(seconds < 2.5 for seconds in later), later
    # no column of placeholders: every row names its step, none shows a bare "…"
    assert not any(re.search(r"^web\d\s+…", screen, re.MULTILINE) for screen in screens)

    final = window.wait_for(r"EXIT=\d+")
    assert "EXIT=0" in final, final
    release = {view.current_release(deploy_to) for view in views.values()}
    assert len(release) == 1 and None not in release
    (release_id,) = release
    lines = final.splitlines()
    assert all(len(line) <= columns for line in lines)
    # the final table: one unbroken line per host, the release id whole on it
    for n in range(1, 5):
        (row,) = [line for line in lines if re.match(rf"\s*web{n}\s+ok\s", line)]
        assert release_id in row and "yes" in row
    # every release id on the screen is whole (none broken across lines or cut with an ellipsis)
    assert not re.search(r"\d{8}T\d{0,5}…|\d{8}T\d{6}Z-[0-9a-f]{0,7}(…|$)", final, re.MULTILINE)
    assert "last news" not in final and "validating" not in final  # the live frame is gone at the end
    verdicts = [line for line in lines if line.startswith(f"deploy {release_id}: OK on 4/4 hosts")]
    assert len(verdicts) == 1
    header = re.search(r"^\s*host\s+result\s+from\s+to\s", final, re.MULTILINE)
    assert bool(header) == (columns >= 120), final  # the narrow table leaves out where hosts came from


def test_a_reverted_rollout_is_shown_as_reverted(make_inventory, artifacts, views, deploy_to, terminal):
    good = make_inventory()
    subprocess.run(
        [sys.executable, "-m", "invoke", "deploy", "--inventory", good, "--artifact", artifacts["v1"]],
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    before = {name: view.current_release(deploy_to) for name, view in views.items()}
    failing = make_inventory(
        extra='health_check: {command: "test $(hostname) != web3", timeout: 5, retries: 0, interval: 1}\n'
        "rollout: {batch: 2}\n"
    )
    window = terminal(80, 24)
    window.start("deploy", "--inventory", failing, "--artifact", artifacts["v2"])
    final = window.wait_for(r"EXIT=\d+")
    assert "EXIT=1" in final, final
    assert {name: view.current_release(deploy_to) for name, view in views.items()} == before
    lines = final.splitlines()
    for name in ("web1", "web2", "web4"):  # switched, then put back: never "ok"
        (row,) = [line for line in lines if re.match(rf"\s*{name}\s+(ok|reverted|failed)\s", line)]
        assert re.match(rf"\s*{name}\s+reverted\s", row), row
    assert re.search(r"^\s*web3\s+failed\s", final, re.MULTILINE)
    assert re.search(r"^web3: health check failed", final, re.MULTILINE)  # the whole reason, under the table
    assert not re.search(r"^\s*web\d\s+ok\s", final, re.MULTILINE)


def test_ctrl_c_on_a_real_terminal_leaves_where_each_host_is_on_the_screen(
    make_inventory, artifacts, views, deploy_to, terminal
):
    subprocess.run(
        [sys.executable, "-m", "invoke", "deploy", "--inventory", make_inventory(), "--artifact", artifacts["v1"]],
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    before = {name: view.current_release(deploy_to) for name, view in views.items()}
    window = terminal(100, 30)
    go = f"{deploy_to}-go"  # validation ends only after the Ctrl-C (a `sleep 5` could end first on a loaded machine)
    inventory = make_inventory(validate=f"while [ ! -e {go} ]; do sleep 1; done")
    window.start("deploy", "--inventory", inventory, "--artifact", artifacts["v2"])
    window.watch(until=lambda screen: validating_for(screen, "web1") is not None)
    window.tmux("send-keys", "C-c")
    for view in views.values():
        view.sh("touch %s", go)
    final = window.wait_for(r"EXIT=\d+")
    assert "EXIT=130" in final, final
    assert {name: view.current_release(deploy_to) for name, view in views.items()} == before  # over OpenSSH
    for name, release in before.items():  # where each host ended up is on the glass, its id whole
        assert re.search(rf"^  {name}: current -> {release}; this run changed nothing here$", final, re.M), final
    assert re.search(r"^error: interrupted: deploy cut short; 0/4 host\(s\)", final, re.M), final
    # nothing of the live table is left behind (no header, no rows), and no echoed ^C broke it
    assert not re.search(r"^host\s+step\s", final, re.M) and "last news" not in final, final
    assert "^C" not in final


def test_the_watch_counts_down_in_place_under_the_live_table(make_inventory, artifacts, views, deploy_to, terminal):
    """On a terminal the watch is one line under the table, redrawn with each sample round: it
    counts down (a later screen shows fewer seconds left) and never piles up a line per round."""
    subprocess.run(
        [sys.executable, "-m", "invoke", "deploy", "--inventory", make_inventory(), "--artifact", artifacts["v1"]],
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    watched = make_inventory(
        extra="watch: {duration: 6, interval: 1, checks: [{name: smoke, command: 'echo checkout-ok'}]}\n"
    )
    window = terminal(140, 40)
    window.start("deploy", "--inventory", watched, "--artifact", artifacts["v2"])
    countdown = re.compile(r"watch the fleet: (\d+)s left: smoke exit 0: checkout-ok \(fails if it exits non-zero\) ok")
    screens = window.watch(lambda screen: "EXIT=" in screen, timeout=120)
    shown = [[int(left) for left in countdown.findall(screen)] for screen in screens]
    assert all(len(lefts) <= 1 for lefts in shown), "more than one countdown line on one screen"
    lefts = [found[0] for found in shown if found]
    assert len(set(lefts)) >= 3 and lefts == sorted(lefts, reverse=True), lefts
    final = window.everything()
    assert "EXIT=0" in final and "watch of the fleet: PASSED" in final, final
    assert not countdown.search(final)  # the live line went with the table
