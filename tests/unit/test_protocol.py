"""The remote protocol (deployer/protocol.py): records are framed by "\\n" only, every field is
escaped by the scripts, parsing is strict, and bytes a host holds can never forge a record.

The hostile-host properties run the real `gather` script (POSIX sh, no SSH) over a deploy folder
whose files hold arbitrary bytes, and check the parsed state, the plans and every rendering."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployer import plan as planning
from deployer.protocol import RECORDS, ProtocolError, escape, parse_output, parse_record
from deployer.render.json import render_json
from deployer.render.text import render_text
from deployer.report import HostResult, OperationReport, Progress, shown, shown_data
from deployer.scripts import SCRIPT_NAMES, command_line, script_source
from deployer.state import parse_state

REMOTE = Path(__file__).resolve().parents[2] / "deployer" / "remote"
DEPLOY_TO = "/srv/app"
SEPARATORS = ["\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("@finished", ("finished", [])),
        ("@hostname\tweb1", ("hostname", ["web1"])),
        ("@current\tlink\treleases/r1", ("current", ["link", "releases/r1"])),
        ("@current\tmissing", ("current", ["missing"])),
        ("@previous_version\ta\\tb\\nc\\\\d", ("previous_version", ["a\tb\nc\\d"])),
        ("@hook\tbefore_switch\tfailed\t3\tboom", ("hook", ["before_switch", "failed", "3", "boom"])),
        ("@hook\tafter_switch\tok\t0", ("hook", ["after_switch", "ok", "0"])),
    ],
)
def test_records_parse_exactly(line, expected):
    assert parse_record(line) == expected


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("@no_such_record\tx", "unknown record"),
        ("@hostname", "has 0 field(s), expected 1"),
        ("@hostname\ta\tb", "has 2 field(s), expected 1"),
        ("@finished\textra", "has 1 field(s), expected 0"),
        ("@hook\tname\tok", "expected at least 3"),
        ("@hostname\tbad\\escape", "bad escape"),
        ("@hostname\ttrailing\\", "bad escape"),
    ],
)
def test_records_that_break_the_protocol_are_refused(line, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_record(line)
    with pytest.raises(ProtocolError, match="nothing in it was used"):
        parse_output(line + "\n", host="web1", step="gather")


@pytest.mark.parametrize("separator", SEPARATORS)
def test_only_newline_ends_a_record(separator):
    # A previousVersion holding "<separator>@pin<TAB>{...}", as emit sends it: str.splitlines()
    # would cut at the separator and read a forged pin record; the protocol reads one field.
    forged = f'/srv/app/releases/r1{separator}@pin\t{{"release": "r1"}}'
    output = parse_output(f"@previous_version\t{escape(forged)}\n")
    assert output.records == [("previous_version", [forged])]
    assert output.first("pin") is None


def test_a_torn_last_line_is_never_a_record():
    output = parse_output("@hostname\tweb1\n@deploy_to\tpresent\t/srv/ap")
    assert output.records == [("hostname", ["web1"])]
    assert output.text == ["@deploy_to\tpresent\t/srv/ap"]


def test_stderr_never_carries_records():
    output = parse_output("@finished\n", stderr='@pin\t{"release": "r9"}\n@unlocked\n')
    assert output.records == [("finished", [])]


def test_every_record_the_scripts_emit_is_declared():
    emitted = set()
    for script in REMOTE.glob("*.sh"):
        # recorded_as NAME: emitted once a switch's records are renamed into place (lib.sh)
        emitted |= set(re.findall(r"\b(?:emit|recorded_as) ([a-z_]+)", script.read_text()))
    assert emitted, "no emit found: the pattern no longer matches the scripts"
    assert emitted <= set(RECORDS), f"emitted but not declared in deployer/protocol.py: {emitted - set(RECORDS)}"
    assert set(RECORDS) - emitted == set(), f"declared but never emitted: {set(RECORDS) - emitted}"


def emitted_by_sh(*fields: str) -> str:
    script = script_source("finish").split("\n# finish DEPLOY_TO")[0] + '\nemit hook "$@"\n'
    done = subprocess.run(["sh", "-c", script, "emit-test", *fields], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode("utf-8", errors="surrogateescape")


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=30),
        min_size=3,
        max_size=5,
    )
)
def test_emit_and_parse_round_trip_any_text(fields):
    output = parse_output(emitted_by_sh(*fields))
    assert output.records == [("hook", fields)]
    assert escape(fields[0]).count("\n") == 0


# --- a hostile host: arbitrary bytes in every file the tool reads ---

HOST_FILES = {
    "previous": "releases/r2/previousVersion",
    "previous_old": "releases/r1/previousVersion",
    "meta": ".deployer/meta/r2",
    "bad": ".deployer/bad/r1",
    "pin": ".deployer/pin",
    "schema": ".deployer/schema",
    "history": ".deployer/history.jsonl",
    "lock": ".deployer/lock/info",
}
hostile_bytes = st.binary(max_size=120) | st.sampled_from(
    [
        b'/srv/app/releases/r1\r@pin\t{"release": "r1"}\r@schema\t9 9 x',
        b"\x1b]0;owned\x07\x1b[2J\x9b31m",
        b'{"op": "rollback", "to": "r1"}\n\x1b[31m',
        b"\xff\xfe\x00garbage\n\n\t\t",
        b"ok \x1b[2J - - - -",
    ]
)


def build_host(root: Path, files: dict[str, bytes], weird_folder: bytes | None) -> str:
    deploy_to = root / "app"
    for release in ("r1", "r2"):
        (deploy_to / "releases" / release).mkdir(parents=True, exist_ok=True)
    (deploy_to / ".deployer" / "meta").mkdir(parents=True, exist_ok=True)
    (deploy_to / ".deployer" / "bad").mkdir(parents=True, exist_ok=True)
    if "lock" in files:  # a lock folder without info makes gather look twice, a second apart
        (deploy_to / ".deployer" / "lock").mkdir(parents=True, exist_ok=True)
    (deploy_to / ".deployer" / "meta" / "r1").write_text("ok d1 2026-01-01T00:00:00.000000Z - -\n")
    os.symlink("releases/r2", deploy_to / "current")
    for key, data in files.items():
        (deploy_to / HOST_FILES[key]).write_bytes(data)
    if weird_folder:
        name = weird_folder.replace(b"/", b"_").replace(b"\0", b"_")
        if name not in (b".", b".."):
            os.makedirs(os.path.join(bytes(deploy_to / "releases"), name), exist_ok=True)
    return str(deploy_to)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    files=st.dictionaries(st.sampled_from(sorted(HOST_FILES)), hostile_bytes, min_size=1),
    weird_folder=st.none() | st.binary(min_size=1, max_size=20),
)
def test_hostile_host_files_are_data_never_control(tmp_path_factory, files, weird_folder):
    deploy_to = build_host(tmp_path_factory.mktemp("host"), files, weird_folder)
    done = subprocess.run(
        ["sh", "-c", command_line("gather", deploy_to, history="50")], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    output = parse_output(done.stdout.decode("utf-8", errors="replace"), done.stderr.decode(errors="replace"))
    state = parse_state("web1", output, deploy_to)

    # Nothing is forged: the pin, the schema and the lock come only from their own files.
    if "pin" not in files:
        assert state.pin is None
    if "schema" not in files:
        assert state.schema is None
    assert state.current == "r2"
    made = weird_folder.replace(b"/", b"_").replace(b"\0", b"_") if weird_folder else b""
    assert set(state.releases) <= {"r1", "r2"} | ({made.decode("utf-8", "replace")} if made else set())
    assert all("\n" not in release and "\t" not in release for release in state.releases)

    # The planner takes it as data: a plan or a refusal, never a crash.
    states = {"web1": state}
    planning.plan_rollback(DEPLOY_TO, states, {})
    planning.plan_rollback(DEPLOY_TO, states, {}, "r1")
    planning.plan_deploy(DEPLOY_TO, states, {}, "r3", "d3")

    # Every rendering shows it without a control character reaching the terminal.
    previous, problem = state.previous_version(DEPLOY_TO)
    texts = [problem, *state.notes, json.dumps(state.pin or {}), state.lock.describe() if state.lock else ""]
    report = OperationReport("rollback", None, hosts=[HostResult("web1", "failed", message=" | ".join(texts))])
    report.notes.extend(texts)
    plain, as_json, progress = io.StringIO(), io.StringIO(), io.StringIO()
    render_text(report, plain)
    render_json(report, as_json)
    Progress(progress).say(" ".join(texts))
    for rendered in (plain.getvalue(), progress.getvalue()):
        assert not CONTROL.search(rendered.replace("\n", "").replace("\t", "")), rendered
    for value in strings(json.loads(as_json.getvalue())):
        assert not CONTROL.search(value.replace("\n", "").replace("\t", "")), value


CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def strings(data):
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(data, list):
        for item in data:
            yield from strings(item)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_answer_is_records_or_a_protocol_error(text):
    try:
        output = parse_output(text)
    except ProtocolError:
        return
    for name, _fields in output.records:
        assert name in RECORDS
    parse_state("web1", output, DEPLOY_TO)  # and the state parser takes whatever passed


def test_shown_text_and_data_have_no_control_characters():
    nasty = "a\x1b[2Jb\x9bc\u202ed\re\x07f\nok\t!"
    assert shown(nasty) == "a\\x1b[2Jb\\x9bc\\u202ed\\re\\x07f\nok\t!"
    assert shown_data({"k\x1b": [nasty]}) == {"k\\x1b": [shown(nasty)]}
    assert shown("x" * 30000).endswith("[10000 more characters not shown]")


def test_every_script_is_known():
    assert {path.stem for path in REMOTE.glob("*.sh")} - {"lib"} == set(SCRIPT_NAMES)


def test_sessions_send_scripts_without_comment_lines_or_helpers_they_never_call():
    from deployer.scripts import SCRIPT_NAMES, _without_comment_lines, sent_source

    text = "a='\n# inside a string\n'\n# a comment\n  # another\necho \"x\n# inside too\n\" # trailing\nb=$#\n"
    assert _without_comment_lines(text) == "a='\n# inside a string\n'\necho \"x\n# inside too\n\" # trailing\nb=$#\n"
    indented = "if x; then\n    y='\n    kept'\n\tz \\\n    w\nfi\n"
    assert _without_comment_lines(indented) == "if x; then\ny='\n    kept'\nz \\\nw\nfi\n"
    for script in REMOTE.glob("*.sh"):  # what makes dropping indentation safe
        text = script.read_text()
        assert "<<" not in text and not re.search(r"[^ ]\\$", text, re.MULTILINE), script.name
    helpers = set(re.findall(r"^([a-z_][a-z_0-9]*)\(\) \{$", (REMOTE / "lib.sh").read_text(), re.MULTILINE))
    assert len(helpers) > 40
    for name in SCRIPT_NAMES:
        full = script_source(name)
        sent = sent_source(name)
        code = _without_comment_lines(full).split("\n")
        assert is_subsequence(sent.split("\n"), code)  # lines only left out, none changed or moved
        # every helper the sent text names (as any word, in a string or a trap too) is defined in it
        named = helpers & set(re.split(r"[^A-Za-z0-9_]+", sent))
        assert {helper for helper in named if f"\n{helper}() {{\n" in sent} == named, name
        assert len(sent) < 0.85 * len(full)
    assert len(sent_source("gather")) < 0.45 * len(script_source("gather"))  # gather calls a third of lib.sh


def is_subsequence(part: list[str], whole: list[str]) -> bool:
    remaining = iter(whole)
    return all(any(line == candidate for candidate in remaining) for line in part)
