"""`inv` entry point: the tasks live in deployer/tasks.py (also installed as the `deployer` command)."""

from deployer.tasks import *  # noqa: F403 - invoke collects the Task objects from this module
