"""A pull deploy's fetch on the host (remote/stage.sh source=fetch, no SSH): curl, GNU wget and
BusyBox wget each fetch from a local HTTP server, the digest is checked before anything is
unpacked, an HTTP error is reported as such, and the URL never reaches a command line."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from deployer.protocol import parse_output
from deployer.release import PreparedArtifact, pack_directory
from deployer.scripts import EXIT_DIGEST, EXIT_FETCH, command_line, octal_escaped

TOOLS = "awk cat cp cut dd df gzip ln ls mkdir mv od rm sed sleep sync tail tar tee tr wc sha256sum ps grep"


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    files = tmp_path_factory.mktemp("files")
    tree = tmp_path_factory.mktemp("tree")
    (tree / "VERSION").write_text("pulled\n")
    pack_directory(str(tree), str(files / "app.tar.gz"))
    handler = lambda *args: http.server.SimpleHTTPRequestHandler(*args, directory=str(files))  # noqa: E731
    http.server.SimpleHTTPRequestHandler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with PreparedArtifact(str(files / "app.tar.gz")) as prepared:
        digest = prepared.digest
    yield f"http://127.0.0.1:{server.server_address[1]}", digest
    server.shutdown()
    server.server_close()


def only(tmp_path: Path, fetcher: str) -> dict[str, str]:
    """A PATH with the host requirements and one fetcher: "curl", "wget" (GNU) or "busybox" (its wget)."""
    tools = tmp_path / f"bin-{fetcher}"
    tools.mkdir()
    for tool in TOOLS.split(" "):
        os.symlink(shutil.which(tool), tools / tool)
    if fetcher == "busybox":
        os.symlink("/bin/busybox", tools / "wget")
    else:
        os.symlink(shutil.which(fetcher), tools / fetcher)
    return {"PATH": str(tools)}


def stage(deploy_to: str, url: str, digest: str, env: dict[str, str], gate: bytes | None = None):
    """The stage script fetching `url`; with `gate`, as with a cap on hosts fetching at once, and
    `gate` is what the controller sends after the environment block (b"go\n": its turn)."""
    line = f"DEPLOYER_ARTIFACT_URL {octal_escaped(url)}\n".encode()
    block = b"DEPLOYER-ENV %d\n" % len(line) + line
    command = command_line(
        "stage",
        deploy_to,
        release="20260101T000000Z-aaaaaaaa",
        digest=digest,
        source="fetch",
        env="1",
        fetch_gate="1" if gate is not None else "",
    )
    assert url not in command
    stdin = block + (gate or b"")
    done = subprocess.run(["/bin/sh", "-c", command], input=stdin, capture_output=True, env=env, timeout=60)
    return done.returncode, parse_output(done.stdout.decode(), done.stderr.decode())


@pytest.mark.parametrize("fetcher", ["curl", "wget", "busybox"])
def test_each_fetcher_fetches_and_the_digest_is_checked(tmp_path, origin, fetcher):
    url, digest = origin
    deploy_to = str(tmp_path / "srv")
    env = only(tmp_path, fetcher)
    code, output = stage(deploy_to, f"{url}/app.tar.gz?token=x", digest, env)
    assert code == 0, output.error_message()
    assert Path(deploy_to, "releases", "20260101T000000Z-aaaaaaaa", "VERSION").read_text() == "pulled\n"
    assert Path(deploy_to, ".deployer", "artifacts", f"{digest}.tar.gz").is_file()
    code, output = stage(str(tmp_path / "other"), f"{url}/app.tar.gz", "0" * 64, env)
    assert code == EXIT_DIGEST and "the URL served " + digest in output.error_message()
    assert os.listdir(tmp_path / "other" / ".deployer" / "artifacts") == []


@pytest.mark.parametrize("fetcher", ["curl", "wget", "busybox"])
def test_an_http_error_is_final_and_named(tmp_path, origin, fetcher):
    url, digest = origin
    code, output = stage(str(tmp_path / "srv"), f"{url}/missing.tar.gz", digest, only(tmp_path, fetcher))
    assert code == EXIT_FETCH
    message = output.error_message()
    assert message.startswith("could not fetch the artifact: ")
    assert "the server answered with an error after 1 attempt(s)" in message
    assert not Path(tmp_path, "srv", "releases", "20260101T000000Z-aaaaaaaa").exists()


def test_with_a_cap_on_fetches_a_host_fetches_only_when_told_its_turn(tmp_path, origin):
    url, digest = origin
    env = only(tmp_path, "curl")
    code, output = stage(str(tmp_path / "told"), f"{url}/app.tar.gz", digest, env, gate=b"go\n")
    assert code == 0, output.error_message()
    assert output.all("progress")[:3] == [["fetch-wait"], ["fetching"], ["fetched"]]
    code, output = stage(str(tmp_path / "never"), f"{url}/app.tar.gz", digest, env, gate=b"")
    assert code == 10 and "never gave this host its turn" in output.error_message()
    assert output.all("progress") == [["fetch-wait"]]
    assert os.listdir(tmp_path / "never" / ".deployer" / "artifacts") == []
    assert not (tmp_path / "never" / "releases" / "20260101T000000Z-aaaaaaaa").exists()
