"""How the user ran the tool, so that every hint names a command that works where they are.

`deployer unpin` from the installed program, `inv unpin` from the repository's tasks.py, `inv app.unpin`
from a project's tasks.py that added the collection as `app`. Set once by the front end that parsed
the command line (deployer/console.py, deployer/tasks.py); the default is the installed program.
"""

from __future__ import annotations

import os
import sys

_prefix = "deployer "


def ran_as(program: str, task_prefix: str = "") -> None:
    """Record the program (`deployer`, `inv`) and the collection prefix tasks were named with (`app.`)."""
    global _prefix
    _prefix = f"{program} {task_prefix}"


def ran_as_invoke_task(task: str) -> None:
    """Called by an invoke task: the prefix is what the user typed before the task's own name
    (`app.rollback` -> `app.`), read from the command line invoke parsed."""
    prefix = ""
    for word in sys.argv[1:]:
        if word == task or word.endswith("." + task):
            prefix = word[: -len(task)]
            break
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "inv"
    ran_as("inv" if program in ("__main__.py", "invoke", "") else program, prefix)


def command(rest: str) -> str:
    """`command("unpin")` -> "deployer unpin" (or "inv unpin", "inv app.unpin"), for hints."""
    return _prefix + rest


def program() -> str:
    """The program alone: `deployer` or `inv`."""
    return _prefix.split(" ", 1)[0]
