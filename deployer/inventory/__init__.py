"""Inventories: which hosts, how to reach them, where to deploy.

- `model`: the inventory as frozen data (hosts, settings)
- `load`: reading and checking a YAML inventory (`load_inventory`, `parse_inventory`)
- `checks`: the small schema library every check goes through (errors name file and key)
- `sections`: the inventory's keys and its smaller sections
- `ssh_config`: the one OpenSSH client config reader (also used by `deployer.playground.vagrant`)
"""

from deployer.inventory.load import load_inventory, parse_inventory
from deployer.inventory.model import (
    LOCAL_HOOKS,
    NAME_RE,
    REMOTE_HOOKS,
    EnvVar,
    Gateway,
    HealthCheck,
    Host,
    Inventory,
    Rollout,
    Timeouts,
)

__all__ = [
    "LOCAL_HOOKS",
    "NAME_RE",
    "REMOTE_HOOKS",
    "EnvVar",
    "Gateway",
    "HealthCheck",
    "Host",
    "Inventory",
    "Rollout",
    "Timeouts",
    "load_inventory",
    "parse_inventory",
]
