"""Pull deploys on the local fleet: hosts fetch the artifact themselves (curl or wget) from a real
HTTP origin (Debian's nginx, started here), check its digest (and signature) before it can go live,
and keep it for redeploys; a broken origin (404, other bytes, a truncated body, a connection reset
on every attempt) is refused before any switch; a transfer broken once is resumed. Hosts are read
over OpenSSH; what the origin served is read from its own access log."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from deployer import signing
from tests.conftest import run_inv

pytestmark = pytest.mark.fleet

PULLING = ["web1", "web2", "web4"]  # GNU curl, BusyBox wget, GNU with a tcsh login shell (web3 has neither)
NGINX = "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def nginx(tmp_path_factory):
    """A real nginx serving a folder on loopback; its access log says what each host fetched."""
    if not os.path.exists(NGINX):
        pytest.fail("nginx is not installed: ./dev.sh setup installs it")
    root = tmp_path_factory.mktemp("origin")
    (root / "files").mkdir()
    port = free_port()
    conf = root / "nginx.conf"
    conf.write_text(
        f"""daemon off;
user root;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {root}/files;
    }}
}}
"""
    )
    (root / "tmp").mkdir()
    server = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(root)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                said = server.stderr.read().decode() if server.stderr else ""
                raise RuntimeError(f"nginx did not start: {said}") from None
            time.sleep(0.05)
    yield {"root": root, "files": root / "files", "url": f"http://127.0.0.1:{port}", "log": root / "access.log"}
    server.terminate()
    server.wait(timeout=10)


def served(nginx, name: str) -> list[str]:
    """The access log's lines for /NAME: one per request, with its status."""
    lines = Path(nginx["log"]).read_text().splitlines() if Path(nginx["log"]).exists() else []
    return [line for line in lines if f"GET /{name} " in line]


def publish(nginx, artifacts, version: str, name: str | None = None) -> tuple[str, str, str]:
    """Put sample artifact `version` on the origin: (local path, URL, sha256)."""
    name = name or f"app-{version}-{os.urandom(4).hex()}.tar.gz"
    shutil.copy(artifacts[version], nginx["files"] / name)
    digest = hashlib.sha256(Path(artifacts[version]).read_bytes()).hexdigest()
    return artifacts[version], f"{nginx['url']}/{name}", digest


def test_hosts_pull_the_artifact_themselves_and_keep_it_for_redeploys(
    nginx, make_inventory, views, deploy_to, artifacts, local_fleet
):
    inventory = make_inventory(hosts=PULLING)
    v1, v1_url, _ = publish(nginx, artifacts, "v1")
    before = local_fleet.ssh_counts()
    done = run_inv("deploy", "-i", inventory, "--artifact", v1, "--pull", v1_url, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    after = local_fleet.ssh_counts()
    for name in PULLING:
        assert views[name].version(deploy_to) == "v1"
        assert (after[name][0] - before[name][0], after[name][1] - before[name][1]) == (1, 3)
    v1_name = v1_url.rsplit("/", 1)[1]
    assert len(served(nginx, v1_name)) == len(PULLING)  # one fetch per host
    # given only as a URL (presigned: its query is a credential) and its digest
    _, v2_url, v2_digest = publish(nginx, artifacts, "v2")
    presigned = v2_url + "?X-Amz-Signature=s3cr3t"
    done = run_inv("deploy", "-i", inventory, "--artifact", presigned, "--sha256", v2_digest, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "s3cr3t" not in done.stdout + done.stderr
    assert {views[name].version(deploy_to) for name in PULLING} == {"v2"}
    # back to v1: each host still holds its tarball, so nothing is fetched again
    again = run_inv("deploy", "-i", inventory, "--artifact", v1, "--pull", v1_url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(served(nginx, v1_name)) == len(PULLING)
    assert {views[name].version(deploy_to) for name in PULLING} == {"v1"}


def test_a_host_with_neither_curl_nor_wget_is_named_and_nothing_changes(
    nginx, make_inventory, views, deploy_to, artifacts
):
    inventory = make_inventory()  # web3 is the posix-strict host: no curl, no wget
    v1, url, _ = publish(nginx, artifacts, "v1")
    refused = run_inv("deploy", "-i", inventory, "--artifact", v1, "--pull", url)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "host web3 has no curl or wget (pull deploys)" in refused.stdout + refused.stderr
    assert all(view.current_link(deploy_to) is None for view in views.values())
    assert served(nginx, url.rsplit("/", 1)[1]) == []


class BrokenOrigin(http.server.ThreadingHTTPServer):
    """An origin that misbehaves on purpose, per path: /truncated/NAME (a body shorter than its
    Content-Length), /reset/NAME (the connection reset mid-body, every time), /flaky/NAME (reset
    mid-body on a request without Range, whole on a resumed one: Range honoured). And two that are
    not broken, to see how many hosts fetch at once (`most`): /slow/NAME (the body over about a
    second), /slower/NAME (over about three), /together/NAME (requests held until two have been in
    flight at once, at most 30 s)."""

    daemon_threads = True

    def __init__(self, files: Path) -> None:
        self.files = files
        self.requests: list[tuple[str, str]] = []  # (path, Range header)
        self.in_flight = 0
        self.most = 0  # the most requests in flight at once
        self.changed = threading.Condition()
        super().__init__(("127.0.0.1", 0), BrokenHandler)


class BrokenHandler(http.server.BaseHTTPRequestHandler):
    server: BrokenOrigin

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.server.requests.append((self.path, self.headers.get("Range", "")))
        parts = self.path.strip("/").split("/")
        path = self.server.files / parts[-1]
        if len(parts) != 2 or not path.is_file():
            self.send_error(404)
            return
        mode, data = parts[0], path.read_bytes()
        start = 0
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes=") and mode == "flaky":
            start = int(ranged[6:].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if mode in ("slow", "slower", "together"):
            self.counted(data)
        elif mode == "truncated":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        elif mode in ("reset", "flaky") and not (mode == "flaky" and ranged):
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()  # RST, not FIN
        else:
            self.wfile.write(data[start:])
        self.close_connection = True

    def counted(self, data: bytes) -> None:
        origin = self.server
        with origin.changed:
            origin.in_flight += 1
            origin.most = max(origin.most, origin.in_flight)
            origin.changed.notify_all()
            if self.path.startswith("/together/"):
                origin.changed.wait_for(lambda: origin.most >= 2, timeout=30)
        counted = True
        try:
            for index in range(4):
                if index == 3:  # out of flight before the last bytes go: the client may be done at once
                    with origin.changed:
                        origin.in_flight -= 1
                        counted = False
                elif self.path.startswith("/slow/") and index > 0:
                    time.sleep(0.25)
                elif self.path.startswith("/slower/") and index > 0:
                    time.sleep(1.5)
                self.wfile.write(data[index * len(data) // 4 : (index + 1) * len(data) // 4])
                self.wfile.flush()
        finally:
            if counted:
                with origin.changed:
                    origin.in_flight -= 1


@pytest.fixture
def broken(nginx):
    origin = BrokenOrigin(nginx["files"])
    thread = threading.Thread(target=origin.serve_forever, daemon=True)
    thread.start()
    yield origin, f"http://127.0.0.1:{origin.server_address[1]}"
    origin.shutdown()
    origin.server_close()


def not_found(nginx, broken, artifacts):
    local, url, _ = publish(nginx, artifacts, "v1")
    return local, url + ".missing", "the server answered with an error"


def other_bytes(nginx, broken, artifacts):
    local, _, _ = publish(nginx, artifacts, "v1")
    _, url, _ = publish(nginx, artifacts, "v2")  # the URL serves v2; v1's digest is expected
    return local, url, "artifact digest mismatch"


def truncated_body(nginx, broken, artifacts):
    local, url, _ = publish(nginx, artifacts, "v1")
    return local, f"{broken[1]}/truncated/{url.rsplit('/', 1)[1]}", "after 3 attempt(s)"


def reset_every_time(nginx, broken, artifacts):
    local, url, _ = publish(nginx, artifacts, "v1")
    return local, f"{broken[1]}/reset/{url.rsplit('/', 1)[1]}", "after 3 attempt(s)"


@pytest.mark.parametrize("case", [not_found, other_bytes, truncated_body, reset_every_time])
def test_a_broken_origin_is_refused_before_any_switch(case, nginx, broken, make_inventory, views, deploy_to, artifacts):
    inventory = make_inventory(hosts=PULLING)
    local, url, reason = case(nginx, broken, artifacts)
    done = run_inv("deploy", "-i", inventory, "--artifact", local, "--pull", url, "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    for host in report["hosts"]:
        assert host["status"] == "failed" and reason in host["message"], host
        assert "Traceback" not in host["message"]
    for name in PULLING:
        assert views[name].current_link(deploy_to) is None
        assert views[name].releases(deploy_to) == []
        leftovers = views[name].sh("ls -A %s", f"{deploy_to}/.deployer/artifacts")
        assert leftovers == "", leftovers  # no partial download is left behind


def test_a_transfer_broken_once_is_resumed_where_it_stopped(nginx, broken, make_inventory, views, deploy_to, artifacts):
    inventory = make_inventory(hosts=PULLING)
    local, url, _ = publish(nginx, artifacts, "v1")
    flaky = f"{broken[1]}/flaky/{url.rsplit('/', 1)[1]}"
    done = run_inv("deploy", "-i", inventory, "--artifact", local, "--pull", flaky)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {views[name].version(deploy_to) for name in PULLING} == {"v1"}
    origin = broken[0]
    size = Path(local).stat().st_size
    resumed = [ranged for _path, ranged in origin.requests if ranged]
    assert len(resumed) == len(PULLING) and all(ranged == f"bytes={size // 2}-" for ranged in resumed)


def test_a_signed_pull_deploy_is_checked_by_every_host(nginx, make_inventory, views, deploy_to, artifacts, tmp_path):
    key = tmp_path / "ci"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    public = " ".join(Path(f"{key}.pub").read_text().split()[:2])
    (tmp_path / "allowed").write_text(f"ci@example.org {public}\n")
    inventory = make_inventory(
        hosts=PULLING, extra=f"signatures: {{allowed_signers: {tmp_path / 'allowed'}, require: true}}\n"
    )
    _, url, digest = publish(nginx, artifacts, "v1")
    unsigned = run_inv("deploy", "-i", inventory, "--artifact", url, "--sha256", digest)
    assert unsigned.returncode == 2 and "give its signature (--signature)" in unsigned.stderr
    signature = signing.sign(artifacts["v1"], str(key), out=str(tmp_path / "v1.sig"))
    done = run_inv("deploy", "-i", inventory, "--artifact", url, "--sha256", digest, "--signature", signature)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in PULLING:
        release = views[name].current_release(deploy_to)
        assert views[name].sh("cat %s", f"{deploy_to}/.deployer/meta/{release}").split()[-2] == "ci@example.org"
    # another artifact's signature with this URL: every host refuses on its own
    _, url2, digest2 = publish(nginx, artifacts, "v2")
    refused = run_inv(
        "deploy", "-i", inventory, "--artifact", url2, "--sha256", digest2, "--signature", signature, "--json"
    )
    assert refused.returncode == 1, refused.stdout
    messages = [host["message"] for host in json.loads(refused.stdout)["hosts"]]
    assert all("signature refused by this host" in message for message in messages), messages
    assert {views[name].version(deploy_to) for name in PULLING} == {"v1"}


def test_a_cap_on_hosts_fetching_at_once(nginx, broken, make_inventory, views, deploy_to, artifacts):
    """`fetch_parallel: 1`: the origin never sees two hosts fetching at once, each host shows it
    waited for its turn, and validation is not held back. Without the cap they fetch together."""
    origin, url = broken
    v1, _, _ = publish(nginx, artifacts, "v1", "capped-v1.tar.gz")
    capped = make_inventory(hosts=PULLING, extra="fetch_parallel: 1\n")
    done = run_inv("deploy", "-i", capped, "--artifact", v1, "--pull", f"{url}/slow/capped-v1.tar.gz", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {views[name].version(deploy_to) for name in PULLING} == {"v1"}
    assert len([path for path, _ in origin.requests if path == "/slow/capped-v1.tar.gz"]) == len(PULLING)
    assert origin.most == 1
    timeline = json.loads(done.stdout)["timeline"]
    for name in PULLING:
        parts = [phase["phase"] for phase in timeline["hosts"][name]]
        assert "wait for a fetch slot" in parts and "fetch" in parts, parts

    v2, _, _ = publish(nginx, artifacts, "v2", "free-v2.tar.gz")
    free = make_inventory(hosts=PULLING)
    done = run_inv("deploy", "-i", free, "--artifact", v2, "--pull", f"{url}/together/free-v2.tar.gz", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert origin.most >= 2  # without the cap, two hosts were fetching at the same time
    assert {views[name].version(deploy_to) for name in PULLING} == {"v2"}


def test_waiting_for_a_fetch_slot_has_its_own_bound_apart_from_the_stage_limit(
    nginx, broken, make_inventory, views, deploy_to, artifacts
):
    """One host fetches at a time, each fetch takes about 3 s, staging is allowed 5.5 s: the last host
    waits about 6 s for its turn. Before, the wait counted against timeouts.stage and the last hosts
    timed out in the queue; now waiting is bounded by timeouts.fetch_wait, working by timeouts.stage."""
    origin, url = broken
    v1, _, _ = publish(nginx, artifacts, "v1", "queued-v1.tar.gz")
    queued = make_inventory(hosts=PULLING, extra="fetch_parallel: 1\n", timeouts="{connect: 5, stage: 5.5}")
    done = run_inv("deploy", "-i", queued, "--artifact", v1, "--pull", f"{url}/slower/queued-v1.tar.gz", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {views[name].version(deploy_to) for name in PULLING} == {"v1"}
    assert origin.most == 1
    waits = [
        phase["end"] - phase["start"]
        for name in PULLING
        for phase in json.loads(done.stdout)["timeline"]["hosts"][name]
        if phase["phase"] == "wait for a fetch slot"
    ]
    assert max(waits) > 4.5  # the last host waited in the queue about as long as the whole stage limit

    v2, _, _ = publish(nginx, artifacts, "v2", "queued-v2.tar.gz")
    impatient = make_inventory(hosts=PULLING, extra="fetch_parallel: 1\n", timeouts="{connect: 5, fetch_wait: 0.5}")
    done = run_inv("deploy", "-i", impatient, "--artifact", v2, "--pull", f"{url}/slower/queued-v2.tar.gz", "--json")
    assert done.returncode == 1
    messages = [host["message"] for host in json.loads(done.stdout)["hosts"]]
    assert sum("no fetch slot within 0.5s (timeouts.fetch_wait" in message for message in messages) == 2, messages
    assert {views[name].version(deploy_to) for name in PULLING} == {"v1"}  # nothing switched
