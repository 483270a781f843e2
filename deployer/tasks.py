"""The `inv` front end: one invoke task per command of deployer/commands.py, built from that table.

`inv deploy`, `inv rollback`, `inv rollback-drill`, ... in this repository (its tasks.py re-exports
these), and in a project's own tasks.py through `collection()`. Flags are the table's, with its
hand-chosen short flags; values are checked by the same code as `deployer`'s (deployer/dispatch.py).
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from invoke import Collection, Context, Task
from invoke.exceptions import Exit

from deployer.commands import COMMANDS, FLAGS, Command
from deployer.invocation import ran_as_invoke_task

# What a project's tasks.py gets from `collection()`: the operator's commands, not the local fleets.
OPERATOR_COMMANDS = (
    "deploy",
    "rollback",
    "rollback-drill",
    "verify",
    "status",
    "history",
    "releases",
    "lock-status",
    "unlock",
    "unpin",
    "prune",
    "place-signers",
    "check",
    "init",
    "report",
    "sign",
)


class _TableTask(Task):
    """A task whose flags and short flags come from the table (invoke would give short flags by first letter)."""

    def __init__(self, spec: Command, *args: Any, **kwargs: Any) -> None:
        self.spec = spec
        super().__init__(*args, **kwargs)

    def arg_opts(self, name: str, default: Any, taken_names: set[str]) -> dict[str, Any]:
        opts: dict[str, Any] = super().arg_opts(name, default, taken_names)
        flag = FLAGS.get(name.replace("_", "-"))
        if flag is not None and flag.short:
            opts["names"] = [*opts["names"], flag.short]
        return opts


def configured_inventory(c: Context) -> tuple[str | None, str | None]:
    """`deployer.inventory` from invoke's configuration (the project's invoke.yaml, ~/.invoke.yaml, ...),
    relative to the project's folder; or what is wrong with it (reported when the task runs)."""
    try:
        value = c.config["deployer"]["inventory"]
    except (KeyError, TypeError, AttributeError):
        return None, None
    if value is not None and not isinstance(value, str):
        return None, f"deployer.inventory in invoke's configuration must be a file name, got {value!r}"
    if value and not os.path.isabs(value):
        value = os.path.join(_project_folder(), value)
    return value or None, None


def _project_folder() -> str:
    """The folder of the project's invoke.yaml: invoke reads it beside the tasks.py it found, searching
    up from here; so do we (without invoke's private attributes)."""
    folder = os.getcwd()
    while True:
        if any(os.path.isfile(os.path.join(folder, name)) for name in ("tasks.py", "invoke.yaml", "invoke.yml")):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return os.getcwd()
        folder = parent


def _task(spec: Command) -> Task:
    def body(c: Context, **raw: Any) -> None:
        from deployer import dispatch  # noqa: PLC0415 - `inv --list` needs neither paramiko nor fabric

        ran_as_invoke_task(spec.name)
        configured, problem = configured_inventory(c) if spec.fleet else (None, None)
        code = dispatch.run(spec.name, raw, configured, problem)
        if code:
            raise Exit(code=code)

    parameters = [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    helps = {}
    for name in spec.flag_names():
        flag = FLAGS[name]
        default: Any = inspect.Parameter.empty if name in spec.positional else None
        if flag.kind == "switch":
            default = bool(flag.default)
        parameters.append(inspect.Parameter(flag.attr, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default))
        helps[flag.attr] = flag.help
    body.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    body.__name__ = spec.name.replace("-", "_")
    body.__doc__ = spec.summary
    return _TableTask(spec, body, name=spec.name, help=helps, positional=list(spec.positional), auto_shortflags=False)


_TASKS: dict[str, Task] = {name: _task(spec) for name, spec in COMMANDS.items() if name != "completion"}
globals().update({name.replace("-", "_"): task for name, task in _TASKS.items()})


def collection(name: str | None = None) -> Collection:
    """The operator tasks (deploy, rollback, rollback-drill, verify, status, ...) as an invoke collection
    for a project's own tasks.py: `ns.add_collection(deployer.tasks.collection(), name="app")` gives
    `inv app.deploy`; the inventory comes from `deployer.inventory` in the project's invoke.yaml."""
    chosen = [_TASKS[command] for command in OPERATOR_COMMANDS]
    return Collection(name, *chosen) if name else Collection(*chosen)


__all__ = [*(name.replace("-", "_") for name in _TASKS), "collection"]
