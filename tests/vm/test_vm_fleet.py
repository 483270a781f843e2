"""On real VMs: the drill against a systemd service, power cuts at several moments, a reboot in the
middle of an operation, a clock hours off, and locks left by another machine or a dead process.

After every cut the VM is booted and checked from outside the tool: `current` points at a release
whose every file matches the manifest shipped in the artifact (a power cut after an unflushed
switch leaves files of length 0 behind a valid link), the service serves that release, `inv status`
is sane, and a rerun converges.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.monitoring import ERROR_RATIO, Load, monitoring
from tests.vm.conftest import DEPLOY_TO, VMS, VmFleet, hold, inv, inv_background, kill_group

pytestmark = pytest.mark.vm

HOOK = "sudo systemctl reload-or-restart sample-app"


def deployed(done: subprocess.CompletedProcess[str]) -> str:
    """The release a successful `inv deploy` switched to (from its JSON document)."""
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)["target"]


def status(inventory: str) -> dict:
    done = inv("status", "-i", inventory, "--json")
    return json.loads(done.stdout) | {"exit": done.returncode}


def assert_serving(vms: VmFleet, name: str, release: str, version: str) -> None:
    assert vms.complete_release(name) == release
    deadline = time.monotonic() + 60
    while (answer := vms.health(name)) != f"ok release={release} version={version}":
        assert time.monotonic() < deadline, f"{name} serves {answer!r}, not {release} ({version})"
        time.sleep(1)


def wait_for_marker(vms: VmFleet, name: str, marker: str, process: subprocess.Popen[str]) -> None:
    """Until `name` says it holds at `marker` (asked every 0.2 s on the VM, 5 s per session)."""
    deadline = time.monotonic() + 180
    wait = f"n=0; until test -e {DEPLOY_TO}/in-{marker} || [ $n -ge 25 ]; do sleep 0.2; n=$((n + 1)); done; "
    while vms.sh(name, wait + f"test -e {DEPLOY_TO}/in-{marker}", check=False).returncode != 0:
        if process.poll() is not None:
            raise AssertionError(f"the run ended before {name} reached {marker}: {process.communicate()[0]}")
        assert time.monotonic() < deadline, f"{name} never reached {marker}"
        time.sleep(0.5)


def test_drill_with_the_systemd_service_and_a_clock_hours_off(vms, artifacts, tmp_path):
    """The drill against the real service (reload hooks, health checks that ask it which release it
    serves), with web2's clock six hours ahead: release order, the rollback's target and history
    times come from this machine, so nothing changes. The drill is watched, as in an integration
    environment with traffic: a real Prometheus scrapes the service's /metrics on each VM while
    requests flow, and both deploy phases pass their watch on real values."""
    vms.sh("web2", "date -s @$(( $(date +%s) + 21600 )) >/dev/null")
    # 5 requests a second per VM: enough for a 5 s rate, and little of a TCG VM's CPU (every request
    # is a new connection to a Python server whose every instruction QEMU emulates)
    load = Load([f"http://{vms.addresses[name]}:8080/" for name in VMS], interval=0.2)
    targets = [f"{vms.addresses[name]}:8080" for name in VMS]
    try:
        v1 = deployed(inv("deploy", "-i", str(vms.inventory), "--artifact", artifacts["v1"], "--json"))
        for name in VMS:
            assert_serving(vms, name, v1, "v1")
        junit = tmp_path / "drill.xml"
        (tmp_path / "monitoring").mkdir()
        with monitoring(tmp_path / "monitoring", targets, "127.0.0.1:19190", "127.0.0.1:19193") as urls:
            load.start()
            check = {"name": "error ratio", "prometheus": urls["prometheus"], "query": ERROR_RATIO}
            check.update({"fail_if": "> 0.05", "on_empty": "inconclusive"})
            watched = vms.make_inventory(
                tmp_path / "watched.yml", watch={"duration": 8, "interval": 1, "checks": [check]}
            )
            drill = inv("rollback-drill", "-i", watched, "--artifact", artifacts["v2"], "--junit", str(junit), "--json")
        assert drill.returncode == 0, drill.stdout + drill.stderr
        watches = json.loads(drill.stdout)["watches"]
        assert [watch["verdict"] for watch in watches] == ["passed", "passed"]
        values = [sample["value"] for watch in watches for sample in watch["samples"] if sample["outcome"] == "pass"]
        assert values and all(value <= 0.05 for value in values)  # real ratios, read from the VMs' service
        assert load.answers.get(200, 0) > 0
        report = junit.read_text()
        assert 'failures="0"' in report and report.count("<testcase") >= 3 * len(VMS)
        v2 = status(str(vms.inventory))["currents"]
        assert len(v2) == 1 and v2[0] != v1
        for name in VMS:
            assert_serving(vms, name, v2[0], "v2")  # the reload hook re-executed the service from the new release
            assert vms.sh(name, "systemctl is-active sample-app").stdout.strip() == "active"
        history = vms.sh("web2", f"cat {DEPLOY_TO}/.deployer/history.jsonl").stdout.splitlines()
        times = [json.loads(line)["time"] for line in history]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        assert len(times) >= 4 and all(stamp <= now for stamp in times), times  # not six hours ahead
    finally:
        load.stop()
        vms.sh("web2", f"date -s @{int(time.time())} >/dev/null")


def test_power_cut_seconds_after_a_deploy_returned_then_in_a_rollbacks_switch(vms, artifacts, tmp_path):
    """The case that lost data: the deploy said OK, then power went. Every host comes back on the
    new release, complete (the files were flushed before the switch, the switch after it). Then
    web2 loses power in its after-rollback hook: it comes back on one complete release, and a rerun
    of the rollback (to the release named) converges. (One test: each boot costs a minute under TCG.)"""
    v1 = deployed(inv("deploy", "-i", str(vms.inventory), "--artifact", artifacts["v1"], "--json"))
    v2 = deployed(inv("deploy", "-i", str(vms.inventory), "--artifact", artifacts["v2"], "--json"))
    vms.power_cut(*VMS)  # about a second after the deploy returned: well inside ext4's 5 s / 30 s windows
    vms.power_on(*VMS)
    for name in VMS:
        assert_serving(vms, name, v2, "v2")
        previous = vms.sh(name, f"cat {DEPLOY_TO}/releases/{v2}/previousVersion").stdout.strip()
        assert previous == f"{DEPLOY_TO}/releases/{v1}"
    seen = status(str(vms.inventory))
    assert seen["exit"] == 0 and seen["currents"] == [v2]
    assert all(host["damaged"] == [] for host in seen["hosts"])
    again = inv("deploy", "-i", str(vms.inventory), "--artifact", artifacts["v2"], "--json")
    assert deployed(again) == v2  # a rerun converges: nothing to do

    held = vms.make_inventory(
        tmp_path / "held.yml", hooks={"after_switch": HOOK, "after_rollback": hold("rollback", HOOK)}
    )
    vms.sh("web2", f"touch {DEPLOY_TO}/hold-rollback")
    run = inv_background("rollback", "-i", held)
    wait_for_marker(vms, "web2", "rollback", run)
    vms.power_cut("web2")
    vms.power_on("web2", wait=False)
    output = run.communicate(timeout=300)[0]
    assert run.returncode != 0, output
    vms.wait_up("web2")
    assert vms.complete_release("web2") in {v1, v2}
    vms.sh("web2", f"rm -f {DEPLOY_TO}/hold-rollback {DEPLOY_TO}/in-rollback")
    back = inv("rollback", "-i", str(vms.inventory), "--to", v1)
    assert back.returncode == 0, back.stdout + back.stderr
    for name in VMS:
        assert_serving(vms, name, v1, "v1")
    assert status(str(vms.inventory))["exit"] == 0


def test_power_cut_while_staging(vms, artifacts, tmp_path):
    """Power goes on one host while the new release is unpacked and validated (not yet flushed):
    no host switches, the host comes back on the old release, and the rerun does not reuse the
    half-written release."""
    v1 = deployed(inv("deploy", "-i", str(vms.inventory), "--artifact", artifacts["v1"], "--json"))
    held = vms.make_inventory(tmp_path / "held.yml", validate=hold("stage", "sh bin/check"))
    vms.sh("web1", f"touch {DEPLOY_TO}/hold-stage")
    run = inv_background("deploy", "-i", held, "--artifact", artifacts["v2"])
    wait_for_marker(vms, "web1", "stage", run)
    vms.power_cut("web1")
    vms.power_on("web1", wait=False)  # its new boot refuses the old connection: the run sees it lost
    output = run.communicate(timeout=300)[0]
    assert run.returncode != 0 and "web1" in output and "lost" in output, output
    vms.wait_up("web1")
    assert vms.complete_release("web2") == v1  # validation on all hosts comes before any switch
    assert_serving(vms, "web1", v1, "v1")
    seen = status(str(vms.inventory))
    web1 = next(host for host in seen["hosts"] if host["host"] == "web1")
    half = [release for release in web1["releases"] if release["id"] != v1]
    assert all(release["status"] != "ok" for release in half), half  # never offered for reuse
    vms.sh("web1", f"rm -f {DEPLOY_TO}/hold-stage {DEPLOY_TO}/in-stage")
    v2 = deployed(inv("deploy", "-i", str(vms.inventory), "--artifact", artifacts["v2"], "--json"))
    for name in VMS:
        assert_serving(vms, name, v2, "v2")


def test_power_cut_and_a_reboot_during_a_deploys_switch(vms, artifacts, tmp_path):
    """Both hosts have switched and run their after-switch hook when web1 is rebooted cleanly and
    web2 loses power: the run reports both failed; each comes back on one complete release (old or
    new); the next deploy clears the locks the run could not release, on each host by proof of its
    new boot (no session of that run survived it), and converges: no person needed."""
    v1 = deployed(inv("deploy", "-i", str(vms.inventory), "--artifact", artifacts["v1"], "--json"))
    held = vms.make_inventory(tmp_path / "held.yml", hooks={"after_switch": hold("switch", HOOK)})
    for name in VMS:
        vms.sh(name, f"touch {DEPLOY_TO}/hold-switch")
    boot = vms.boot_id("web1")
    run = inv_background("deploy", "-i", held, "--artifact", artifacts["v2"])
    for name in VMS:
        wait_for_marker(vms, name, "switch", run)
    vms.reboot("web1")
    vms.power_cut("web2")
    vms.power_on("web2", wait=False)
    output = run.communicate(timeout=300)[0]
    assert run.returncode != 0, output
    vms.wait_up("web1", not_boot=boot)
    vms.wait_up("web2")
    for name in VMS:
        assert vms.complete_release(name) != ""  # old or new, every file intact
        vms.sh(name, f"rm -f {DEPLOY_TO}/hold-switch {DEPLOY_TO}/in-switch")
    again = inv("deploy", "-i", str(vms.inventory), "--artifact", artifacts["v2"], "--json")
    v2 = deployed(again)
    assert v2 != v1 and again.stderr.count("cleared a lock taken before this host's last boot") == 2, again.stderr
    for name in VMS:
        assert_serving(vms, name, v2, "v2")
        assert vms.sh(name, f"test -e {DEPLOY_TO}/.deployer/lock", check=False).returncode != 0
    assert status(str(vms.inventory))["exit"] == 0


def test_locks_left_by_another_machine_and_by_a_dead_process(vms, artifacts, tmp_path):
    """A run killed on another controller (here: a clone of this machine, same machine-id, hostname
    and boot id, its own /dev/shm) leaves a lock that is never cleared automatically; a run killed
    on this machine leaves one the next run clears."""
    v1 = deployed(inv("deploy", "-i", str(vms.inventory), "--artifact", artifacts["v1"], "--json"))
    held = vms.make_inventory(tmp_path / "held.yml", validate=hold("stage", "sh bin/check"))
    clone = ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs none /dev/shm && exec "$@"', "-"]

    def killed_while_staging(artifact: str, prefix: list[str] | None = None) -> None:
        """A deploy killed (SIGKILL, no clean-up) while it holds the lock; the host then stops its
        step by itself (its session is gone), the hold still in place: within 20 s."""
        vms.sh("web1", f"touch {DEPLOY_TO}/hold-stage")
        run = inv_background("deploy", "-i", held, "--artifact", artifact, prefix=prefix)
        wait_for_marker(vms, "web1", "stage", run)
        kill_group(run)
        # no process left whose command line holds the hold (grep's own pattern does not match itself)
        stopped = vms.sh(
            "web1",
            "n=0; while grep -l 'hold-[s]tage' /proc/[0-9]*/cmdline >/dev/null 2>&1; do "
            "n=$((n + 1)); [ $n -lt 100 ] || exit 1; sleep 0.2; done; "
            f"test -e {DEPLOY_TO}/hold-stage && rm -f {DEPLOY_TO}/hold-stage {DEPLOY_TO}/in-stage",
            check=False,
        )
        assert stopped.returncode == 0, "the step of the killed run still ran on web1 after 20 s"

    killed_while_staging(artifacts["v2"], prefix=clone)
    refused = inv("deploy", "-i", str(vms.inventory), "--artifact", artifacts["v2"])
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "inv unlock" in refused.stdout + refused.stderr
    for name in VMS:
        assert vms.sh(name, f"test -d {DEPLOY_TO}/.deployer/lock", check=False).returncode == 0
        assert vms.complete_release(name) == v1
    unlocked = inv("unlock", "-i", str(vms.inventory), "--yes")
    assert unlocked.returncode == 0, unlocked.stdout + unlocked.stderr

    killed_while_staging(artifacts["v3"])
    cleared = inv("deploy", "-i", str(vms.inventory), "--artifact", artifacts["v3"], "--json")
    v3 = deployed(cleared)
    assert "stale lock" in cleared.stderr
    for name in VMS:
        assert_serving(vms, name, v3, "v3")
