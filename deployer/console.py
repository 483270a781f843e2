"""The `deployer` command: the same tasks as `inv`, as an installed program with --version and completion."""

from __future__ import annotations

import sys

from invoke import Collection, Program

from deployer import __version__, tasks

program = Program(
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
