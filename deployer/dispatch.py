"""One command run, whichever front end parsed it (`deployer` or `inv`): its values checked against the
table, logging set up, its handler called, and every ending mapped to an exit status in one place."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from deployer import exits
from deployer.arguments import ArgumentProblem, Values
from deployer.commands import COMMANDS, values
from deployer.errors import EXIT_BAD_INPUT, InputError
from deployer.invocation import command
from deployer.locate import named_inventory

# Which module holds each command's handler (imported when the command runs: `--help` stays light).
HANDLER_MODULES = {
    "deployer.playground.handlers": (
        "demo",
        "fleet-up",
        "fleet-down",
        "build-sample",
        "vm-fleet-up",
        "vm-fleet-down",
        "vagrant-inventory",
    )
}


def handler(name: str) -> Callable[[Values], int]:
    module = next((module for module, held in HANDLER_MODULES.items() if name in held), "deployer.cli")
    handlers: dict[str, Callable[[Values], int]] = importlib.import_module(module).HANDLERS
    return handlers[name]


def run(
    name: str, raw: Mapping[str, Any], configured_inventory: str | None = None, config_problem: str | None = None
) -> int:
    """Run command `name` with the flags a front end parsed (`raw`, by attribute name); its exit status.

    `configured_inventory`: `deployer.inventory` from invoke's configuration (invoke.yaml), used when
    neither -i nor $DEPLOYER_INVENTORY names one; `config_problem`: what is wrong with that setting.
    """
    spec = COMMANDS[name]
    as_json = bool(raw.get("json")) and spec.json
    verbose = bool(raw.get("verbose"))

    try:
        checked = values(name, raw)
    except ArgumentProblem as problem:  # before the run log: a mistyped value is not a run
        return exits.fail(f"{command(name)}: {problem}", EXIT_BAD_INPUT, as_json)

    def action() -> int:
        if config_problem:
            raise InputError(config_problem)
        if spec.fleet:
            checked.given["inventory"] = named_inventory(checked.inventory, configured_inventory)
        return handler(name)(checked)

    return exits.guarded(action, name, verbose, as_json, settled_exit=True)
