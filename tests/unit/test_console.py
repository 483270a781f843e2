"""The two front ends (`deployer`, `inv`) built from one table of commands and flags: help, argument
errors, short flags, completion. Nothing here contacts a host."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from deployer import __version__
from deployer.commands import COMMANDS, FLAGS
from tests.conftest import REPO


def deployer(*args: str, cwd: str | os.PathLike[str] = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deployer.console", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def inv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_version_and_the_same_commands_as_inv():
    version = deployer("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"deployer {__version__}"
    listed = inv("--list", "--list-format", "json")
    assert listed.returncode == 0
    # every command but `completion` (a `deployer` matter) is an `inv` task of the same name
    names = sorted(task["name"] for task in json.loads(listed.stdout)["tasks"])
    assert names == sorted(name for name in COMMANDS if name != "completion")


def test_top_level_help_lists_every_command_grouped_and_none_of_invokes_options():
    shown = deployer("--help")
    assert shown.returncode == 0
    for name in COMMANDS:
        assert f"\n  {name} " in shown.stdout, name
    for title in ("Ship and undo:", "Look at a fleet:", "Set up and administer:"):
        assert title in shown.stdout
    assert shown.stdout.index("  deploy ") < shown.stdout.index("  status ") < shown.stdout.index("  unpin ")
    for invoke_option in ("--dry ", "--echo", "--collection", "--search-root", "--complete"):
        assert invoke_option not in shown.stdout
    assert deployer().stdout == shown.stdout  # no command: the same help


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_and_h_on_every_command_show_every_flag_with_its_sentence(name):
    spec = COMMANDS[name]
    long = deployer(name, "--help")
    short = deployer(name, "-h")
    assert long.returncode == 0 == short.returncode, long.stderr
    assert long.stdout == short.stdout
    assert long.stdout.startswith(f"deployer {name}: {spec.summary}")
    assert "Examples:\n  deployer " + spec.examples[0] in long.stdout
    flat = " ".join(long.stdout.split())
    for flag_name in spec.flag_names():
        flag = FLAGS[flag_name]
        spelled = flag.metavar if flag_name in spec.positional else f"--{flag.name}"
        assert spelled in long.stdout, (name, flag_name)
        assert " ".join(flag.help.split())[:40] in flat, (name, flag_name)


def test_help_wins_over_a_positional_and_missing_values():
    for args in (["report", "--help"], ["sign", "--help"], ["sign", "-h"], ["deploy", "--artifact", "--help"]):
        shown = deployer(*args)
        assert shown.returncode == 0 and shown.stdout.startswith(f"deployer {args[0]}:"), args


def test_short_flags_mean_one_thing_in_every_command():
    owners: dict[str, str] = {}
    for flag in FLAGS.values():
        if flag.short:
            assert flag.short not in owners, f"-{flag.short}: {owners.get(flag.short)} and {flag.name}"
            owners[flag.short] = flag.name
    assert owners["i"] == "inventory" and "h" not in owners  # -h is help, everywhere
    assert set(owners) <= {"i", "v", "m", "n", "y", "a", "o"}  # the few used daily, chosen by hand
    for name, spec in COMMANDS.items():
        if spec.fleet:
            assert "inventory" in spec.flag_names(), name


ARGUMENT_ERRORS = [
    (["deploy", "--parallel", "abc"], "--parallel expects a whole number"),
    (["history", "--limit", "ten"], "--limit expects a whole number"),
    (["deploy", "--artfact", "x"], "unknown flag --artfact; did you mean --artifact?"),
    (["deploy", "--lock-wait", "forever"], "--lock-wait expects seconds"),
    (["deploy", "-a"], "--artifact expects PATH"),
    (["status", "extra"], "unexpected argument 'extra'"),
    (["deploy", "--dry-run=yes"], "--dry-run is a switch and takes no value"),
    (["report"], "missing REPORT"),
    (["rollbak"], "unknown command 'rollbak'; did you mean `deployer rollback`?"),
    (["--verison"], "did you mean `deployer --version`?"),
    (["completion", "fish"], "SHELL must be bash or zsh"),
]


@pytest.mark.parametrize(("args", "expected"), ARGUMENT_ERRORS)
def test_every_argument_error_is_one_line_and_exit_2(args, expected):
    result = deployer(*args)
    assert result.returncode == 2, result
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and expected in line


@pytest.mark.parametrize(("args", "expected"), [case for case in ARGUMENT_ERRORS if case[0][0] != "completion"])
def test_every_argument_error_with_json_is_one_json_document(args, expected):
    result = deployer(*args, "--json")
    assert result.returncode == 2
    document = json.loads(result.stdout)  # exactly one JSON document, nothing else on stdout
    assert document["ok"] is False and document["exit_code"] == 2 and expected in document["error"]
    assert "Traceback" not in result.stderr


def test_inv_checks_values_with_the_same_code():
    for args, expected in ((["history", "--limit", "ten"], "--limit expects"), (["deploy", "--parallel", "x"], "")):
        result = inv(*args, "--json")
        document = json.loads(result.stdout)
        assert result.returncode == 2 == document["exit_code"] and "Traceback" not in result.stderr
        assert document["error"].startswith("inv " + args[0] + ": ") and expected in document["error"]


def test_inv_tasks_take_the_tables_short_flags(tmp_path):
    missing = str(tmp_path / "missing.yml")
    result = inv("status", "-i", missing, "--json")
    assert result.returncode == 2 and missing in json.loads(result.stdout)["error"]


def test_bad_input_is_one_line_not_a_traceback(tmp_path):
    result = deployer("status", "--inventory", str(tmp_path / "missing.yml"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_listing_and_help_import_no_ssh_stack():
    """`inv --list`, `deployer --help` and argument errors load neither paramiko nor fabric nor rich."""
    probe = (
        "import sys, tasks, deployer.console as c; c.run(['--help']); c.run(['deploy', '-h']); "
        "c.run(['history', '--limit', 'x']); heavy = [m for m in ('paramiko', 'fabric', 'cryptography', 'rich') "
        "if m in sys.modules]; print('HEAVY', ','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "HEAVY"


def test_every_fleet_command_takes_the_shared_flags_and_changing_ones_the_lock_flags():
    shared = {"inventory", "verbose", "hosts", "group", "json", "parallel", "accept-new-host-keys"}
    changing = {"deploy", "rollback", "rollback-drill", "watch", "unpin", "prune", "place-signers"}
    for name, spec in COMMANDS.items():
        flags = set(spec.flag_names())
        if spec.fleet:
            assert shared <= flags, name
        assert ({"lock-wait", "message"} <= flags) == (name in changing), name


def test_every_command_but_the_demo_and_completion_offers_json():
    for name, spec in COMMANDS.items():
        assert ("json" in spec.flag_names()) == (name not in ("demo", "completion")), name


def test_json_with_bad_input_prints_one_json_document_with_the_error(tmp_path):
    for args in (
        ["status", "--inventory", str(tmp_path / "missing.yml")],
        ["deploy", "--inventory", str(tmp_path / "missing.yml"), "--lock-wait", "forever"],
        ["rollback", "--to", "../etc"],
    ):
        for result in (inv(*args, "--json"), deployer(*args, "--json")):
            document = json.loads(result.stdout)  # exactly one JSON document, nothing else on stdout
            assert document["ok"] is False and document["exit_code"] == 2 == result.returncode, args
            assert document["error"] and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_the_inventory_named_in_invoke_yaml_is_used_by_deployer(tmp_path):
    (tmp_path / "invoke.yaml").write_text("deployer:\n  inventory: ops/prod.yml\n")
    result = deployer("status", "--json", cwd=tmp_path)
    assert result.returncode == 2
    assert str(tmp_path / "ops" / "prod.yml") in json.loads(result.stdout)["error"]
    (tmp_path / "invoke.yaml").write_text("deployer:\n  inventory: [1, 2]\n")
    broken = deployer("status", cwd=tmp_path)
    assert broken.returncode == 2 and "deployer.inventory must be a file name" in broken.stderr


def test_bash_completion_completes_commands_flags_and_files(tmp_path):
    script = deployer("completion", "bash")
    assert script.returncode == 0
    (tmp_path / "app.tar.gz").write_text("")

    def complete(*words: str) -> list[str]:
        line = " ".join(words)
        probe = (
            f"source {tmp_path / 'deployer.bash'}; cd {tmp_path}; COMP_WORDS=({line}); "
            f"COMP_CWORD={len(words) - 1}; _deployer; printf '%s\\n' \"${{COMPREPLY[@]}}\""
        )
        done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    (tmp_path / "deployer.bash").write_text(script.stdout)
    assert complete("deployer", "roll") == ["rollback", "rollback-drill"]
    assert "--artifact" in complete("deployer", "deploy", "--art")
    assert "--to" not in complete("deployer", "deploy", "--")
    assert complete("deployer", "rollback", "--t") == ["--to"]
    assert complete("deployer", "deploy", "--artifact", "app") == ["app.tar.gz"]
    assert complete("deployer", "completion", "z") == ["zsh"]


def test_zsh_completion_loads_and_describes_every_command(tmp_path):
    if not any(os.access(os.path.join(folder, "zsh"), os.X_OK) for folder in os.environ["PATH"].split(":")):
        pytest.fail("zsh is missing: ./dev.sh installs it for this test")
    script = deployer("completion", "zsh")
    (tmp_path / "_deployer").write_text(script.stdout)
    probe = f"fpath=({tmp_path} $fpath); autoload -U compinit; compinit -u -D; autoload -U _deployer; "
    probe += "whence -w _deployer"
    done = subprocess.run(["zsh", "-f", "-c", probe], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "_deployer: function" in done.stdout, done.stderr
    syntax = subprocess.run(["zsh", "-n", str(tmp_path / "_deployer")], capture_output=True, text=True, timeout=30)
    assert syntax.returncode == 0, syntax.stderr
    for name in COMMANDS:
        assert f"'{name}:" in script.stdout


def test_any_unexpected_exception_ends_as_one_line_and_the_run_log(tmp_path, monkeypatch, capsys):
    """The last boundary (exits.guarded): whatever escapes is one line naming it and the run log."""
    from deployer import exits  # noqa: PLC0415

    monkeypatch.setenv("DEPLOYER_LOG_DIR", str(tmp_path))

    def broken() -> int:
        raise OSError(5, "Input/output error")

    for as_json in (False, True):
        assert exits.guarded(broken, "deploy", as_json=as_json) == 1
        out, err = capsys.readouterr()
        (line,) = err.strip().splitlines()
        assert line.startswith("error: unexpected error: OSError: [Errno 5] Input/output error; details in ")
        log = line.rsplit("details in ", 1)[1]
        assert "Traceback" in open(log).read()  # the traceback is in the run log, not on the terminal
        assert (json.loads(out)["run_log"] == log) if as_json else out == ""


def test_build_sample_from_a_broken_installation_is_one_clear_line(tmp_path, monkeypatch):
    from deployer.errors import InputError  # noqa: PLC0415
    from deployer.playground import handlers  # noqa: PLC0415

    monkeypatch.setattr(handlers, "SAMPLE_APP", tmp_path / "sample-app")
    with pytest.raises(InputError, match="sample app is missing from this installation"):
        handlers.build_sample("v1", str(tmp_path / "out.tar.gz"))


def test_verify_and_the_drill_without_the_verify_extra_say_how_to_get_it(tmp_path):
    """pytest and testinfra are the `verify` extra: without them, one line says what to install."""
    hide = "import sys\nsys.modules['testinfra'] = None  # as if the extra were not installed\n"
    (tmp_path / "sitecustomize.py").write_text(hide)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO}"}
    for args, words in (
        (["verify"], "verify checks every host with testinfra"),
        (["rollback-drill", "-a", "x.tar.gz"], "or pass --no-verify"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "deployer.console", *args, "-i", str(tmp_path / "fleet.yml")],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.splitlines()
        assert words in line and "pip install 'deployer[verify]'" in line and "testinfra missing" in line


def test_the_run_log_is_private_and_keeps_no_url_credential(tmp_path):
    """A presigned URL's query is a credential: the run log (often kept as a CI artifact) has neither it
    nor permissions for anyone but its owner."""
    env = {**os.environ, "DEPLOYER_LOG_DIR": str(tmp_path / "runs")}
    url = "https://objects.example.org/app.tar.gz?X-Amz-Credential=AKIA1&X-Amz-Signature=0ddba11secret"
    done = subprocess.run(
        [sys.executable, "-m", "deployer.console", "deploy", "-i", str(tmp_path / "none.yml"), "-a", url,
         "--sha256", "0" * 64],
        capture_output=True, text=True, env=env, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    (log,) = (tmp_path / "runs").glob("*-deploy-*.log")
    assert log.stat().st_mode & 0o777 == 0o600
    text = log.read_text()
    assert "https://objects.example.org/app.tar.gz?***" in text
    assert "0ddba11secret" not in text and "AKIA1" not in text
