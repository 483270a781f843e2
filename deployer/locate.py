"""Where things are when the tool runs from any folder: the inventory, the local fleet, the sample app.

The inventory is the first of: `-i/--inventory`, `$DEPLOYER_INVENTORY`, invoke's configuration
(`deployer: {inventory: FILE}` in the project's `invoke.yaml`), `./deploy.yml` (or `.yaml`), and the
one inventory in `./inventories/`. Nothing here depends on the deployer checkout: the sample app
is package data, and the local fleet lives in `./.fleet` of the folder the command runs in.
"""

from __future__ import annotations

import os
from pathlib import Path

from deployer.errors import InputError

ENVIRONMENT = "DEPLOYER_INVENTORY"
FOLDER_DEFAULTS = ("deploy.yml", "deploy.yaml")
SAMPLE_APP = Path(__file__).resolve().parent / "playground" / "sample_app"
FLEET_DIR = ".fleet"


def find_inventory(given: str | None = None, configured: str | None = None, folder: str | None = None) -> str:
    """The inventory file to use (see the module's docstring for the order); a clear error when none."""
    named = named_inventory(given, configured)
    if named:
        return named
    here = Path(folder or os.getcwd())
    for name in FOLDER_DEFAULTS:
        if (here / name).is_file():
            return str(here / name)
    candidates = sorted(inventory_files(here / "inventories"))
    if len(candidates) == 1:
        return str(candidates[0])
    if candidates:
        names = ", ".join(str(path.relative_to(here)) for path in candidates)
        raise InputError(f"several inventories in {here / 'inventories'} ({names}): choose one with -i FILE")
    raise InputError(
        f"no inventory given and none found in {here}: pass -i FILE, set {ENVIRONMENT}, set deployer.inventory "
        "in invoke.yaml, or write ./deploy.yml (`deployer init` writes one)"
    )


def named_inventory(given: str | None, configured: str | None) -> str | None:
    """The inventory named by the user: --inventory, then $DEPLOYER_INVENTORY, then invoke's configuration."""
    for chosen in (given, os.environ.get(ENVIRONMENT), configured):
        if chosen:
            return chosen
    return None


def inventory_files(folder: Path) -> list[Path]:
    """The inventories in `folder`: YAML files, not the `*.example.yml` templates."""
    if not folder.is_dir():
        return []
    return [
        path
        for path in folder.iterdir()
        if path.suffix in (".yml", ".yaml") and not path.stem.endswith(".example") and path.is_file()
    ]


def fleet_dir(given: str | None = None) -> str:
    """The local fleet's folder: --state-dir, else `.fleet` in the current folder."""
    return os.path.abspath(given or FLEET_DIR)


def project_inventory(folder: str) -> tuple[str | None, str | None]:
    """`deployer: {inventory: FILE}` from the project configuration in `folder` (`invoke.yaml`, as `inv`
    reads it beside a tasks.py), relative to that file; or what is wrong with that setting."""
    import yaml  # noqa: PLC0415 - only when a command runs

    for name in ("invoke.yaml", "invoke.yml"):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle)
        except (OSError, yaml.YAMLError) as error:
            return None, f"{path}: cannot be read: {error}"
        section = data.get("deployer") if isinstance(data, dict) else None
        value = section.get("inventory") if isinstance(section, dict) else None
        if value is not None and not isinstance(value, str):
            return None, f"{path}: deployer.inventory must be a file name, got {value!r}"
        return (os.path.join(folder, value) if value and not os.path.isabs(value) else value) or None, None
    return None, None
