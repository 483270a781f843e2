"""The `deployer` command: the same tasks as `inv`, as an installed program with --version and completion."""

from __future__ import annotations

import os
import sys

from invoke import Collection, Program

from deployer import __version__, tasks


class DeployerProgram(Program):
    """invoke's Program, reading the project configuration (invoke.yaml) of the folder it runs in, as
    `inv` does next to a tasks.py: `deployer: {inventory: FILE}` there names the inventory."""

    def parse_collection(self) -> None:
        super().parse_collection()
        self.config.set_project_location(os.getcwd())
        self.config.load_project()


program = DeployerProgram(
    namespace=Collection.from_module(tasks),
    name="deployer",
    binary="deployer",
    binary_names=["deployer"],
    version=__version__,
)


def main() -> None:
    try:
        program.run()
    except BrokenPipeError:  # `deployer --list | head`: the reader left; not an error worth a traceback
        sys.stderr.close()


if __name__ == "__main__":
    main()
