"""`deployer init`: a first inventory and its known_hosts, from what a fleet already has.

Hosts come from a host list (`web1=10.0.0.1:2222,10.0.0.2`), an OpenSSH client config (its `Host`
entries) or an Ansible inventory (INI or YAML, with groups, `ansible_host`/`ansible_port`/
`ansible_user` and `web[01:20]` ranges). Every host key is fetched with ssh-keyscan and kept only
after its fingerprint is confirmed: by a person on the terminal, or by `--accept-fingerprints FILE`
(fingerprints known out of band: the hosts' provisioning, their consoles). Nothing is written unless
every host answered, every key was confirmed, and the written inventory loads.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deployer.errors import InputError, InventoryError
from deployer.inventory import NAME_RE, load_inventory
from deployer.inventory.checks import Checker
from deployer.inventory.ssh_config import SshConfig, host_blocks
from deployer.keyscan import key_fingerprint, key_type, scan

FINGERPRINT_RE = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
RANGE_RE = re.compile(r"\[([0-9]+):([0-9]+)\]")
DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")


@dataclass
class Target:
    """One host to put in the inventory."""

    name: str
    address: str
    port: int = 22
    user: str = ""
    identity_file: str = ""
    groups: list[str] = field(default_factory=list)


@dataclass
class Written:
    inventory: str
    known_hosts: str
    targets: list[Target]
    keys: dict[str, list[str]]  # host name -> its confirmed known_hosts lines


# -- sources -----------------------------------------------------------------------------------


def _port(value: Any, where: str) -> int:
    text = str(value).strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InputError(f"{where}: port {text!r} is not a port number")
    return int(text)


def _checked_name(name: str, where: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise InputError(f"{where}: {name!r} is not usable as a host name (letters, digits, . _ -)")
    return name


def from_host_list(text: str) -> list[Target]:
    """`[name=][user@]address[:port]` entries separated by commas, spaces or newlines (`#` comments)."""
    targets = []
    words = [word for line in text.splitlines() for word in line.split("#", 1)[0].replace(",", " ").split()]
    for word in words:
        name, _, rest = word.rpartition("=")
        user, _, hostport = rest.rpartition("@")
        if hostport.startswith("["):  # [v6 address]:port
            address, _, tail = hostport[1:].partition("]")
            port = _port(tail[1:], f"host {word}") if tail.startswith(":") else 22
        elif hostport.count(":") == 1:
            address, _, port_text = hostport.partition(":")
            port = _port(port_text, f"host {word}")
        else:
            address, port = hostport, 22
        if not address:
            raise InputError(f"host list: {word!r} has no address")
        targets.append(Target(_checked_name(name or address, f"host list entry {word}"), address, port, user))
    return targets


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def from_ssh_config(path: str) -> list[Target]:
    """The concrete `Host` entries of an ssh_config (patterns such as `*` are skipped)."""
    text = _read(path)
    try:
        config = SshConfig(Checker(path), path, text)
    except InventoryError as error:
        raise InputError(error.problem) from None
    targets: list[Target] = []
    for patterns, _keywords in host_blocks(text):
        for alias in patterns:
            if any(ch in alias for ch in "*?!") or alias in {target.name for target in targets}:
                continue
            found = config.raw(alias)
            if found.get("proxyjump") or found.get("proxycommand"):
                raise InputError(
                    f"{path}: Host {alias} is reached through a bastion (ProxyJump/ProxyCommand): init scans keys "
                    "directly; list the hosts it can reach, or write their keys into known_hosts yourself"
                )
            identity = found.get("identityfile", [""])[0].strip('"')
            targets.append(
                Target(
                    _checked_name(alias, f"{path}: Host {alias}"),
                    found.get("hostname", alias),
                    _port(found.get("port", 22), f"{path}: Host {alias}"),
                    found.get("user", ""),
                    os.path.expanduser(identity) if identity else "",
                )
            )
    return targets


def _expand(pattern: str) -> list[str]:
    """Ansible's numeric host ranges: `web[01:03]` is web01, web02, web03 (widths kept)."""
    match = RANGE_RE.search(pattern)
    if not match:
        return [pattern]
    first, last = match.group(1), match.group(2)
    width = len(first) if first.startswith("0") else 0
    if int(last) < int(first) or int(last) - int(first) > 10000:
        raise InputError(f"ansible inventory: range {match.group(0)} in {pattern!r} is not usable")
    expanded = []
    for number in range(int(first), int(last) + 1):
        expanded += _expand(pattern[: match.start()] + str(number).zfill(width) + pattern[match.end() :])
    return expanded


class _Ansible:
    """Hosts, their variables, and group membership (children included) of an Ansible inventory."""

    SPECIAL = {"all", "ungrouped"}

    def __init__(self, path: str) -> None:
        self.path = path
        self.order: list[str] = []
        self.host_vars: dict[str, dict[str, Any]] = {}
        self.group_vars: dict[str, dict[str, Any]] = {}
        self.members: dict[str, set[str]] = {}  # group -> hosts directly in it
        self.children: dict[str, set[str]] = {}  # group -> child groups

    def add_host(self, name: str, group: str, variables: Mapping[str, Any]) -> None:
        for host in _expand(name):
            if host not in self.host_vars:
                self.order.append(host)
                self.host_vars[host] = {}
            self.host_vars[host].update(variables)
            self.members.setdefault(group, set()).add(host)

    def groups_of(self, host: str) -> list[str]:
        """Every group `host` belongs to, directly or through children, parents after children."""
        found: list[str] = []

        def visit(group: str) -> None:
            if group not in found:
                found.append(group)
                for parent, kids in self.children.items():
                    if group in kids:
                        visit(parent)

        for group, hosts in self.members.items():
            if host in hosts:
                visit(group)
        return found

    def targets(self) -> list[Target]:
        targets = []
        for host in self.order:
            groups = self.groups_of(host)
            merged: dict[str, Any] = dict(self.group_vars.get("all", {}))
            for group in reversed(groups):  # parents first, so a child group's value wins
                merged.update(self.group_vars.get(group, {}))
            merged.update(self.host_vars[host])
            where = f"{self.path}: host {host}"
            address = merged.get("ansible_host") or merged.get("ansible_ssh_host") or host
            port = merged.get("ansible_port") or merged.get("ansible_ssh_port") or 22
            user = merged.get("ansible_user") or merged.get("ansible_ssh_user") or ""
            identity = merged.get("ansible_ssh_private_key_file") or ""
            targets.append(
                Target(
                    _checked_name(host, where),
                    str(address),
                    _port(port, where),
                    str(user),
                    os.path.expanduser(str(identity)) if identity else "",
                    [_checked_name(group, where) for group in groups if group not in self.SPECIAL],
                )
            )
        return targets


def _ini_vars(words: Iterable[str], where: str) -> dict[str, str]:
    variables = {}
    for word in words:
        key, equals, value = word.partition("=")
        if not equals:
            raise InputError(f"{where}: {word!r} is not key=value")
        variables[key] = value.strip("'\"")
    return variables


def from_ansible(path: str) -> list[Target]:
    """An Ansible inventory file: INI (`[group]`, `[group:vars]`, `[group:children]`) or YAML."""
    text = _read(path)
    inventory = _Ansible(path)
    if path.endswith((".yml", ".yaml")) or text.lstrip().startswith(("all:", "---")):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"{path}: not YAML: {exc}") from None
        if not isinstance(data, dict):
            raise InputError(f"{path}: an Ansible YAML inventory is a mapping of groups")
        for group, body in data.items():
            _yaml_group(inventory, str(group), body)
    else:
        _ini(inventory, text)
    targets = inventory.targets()
    if not targets:
        raise InputError(f"{path}: no hosts in this Ansible inventory")
    return targets


def _yaml_group(inventory: _Ansible, group: str, body: Any) -> None:
    where = f"{inventory.path}: group {group}"
    if body is None:
        return
    if not isinstance(body, dict):
        raise InputError(f"{where}: expected hosts/vars/children, got {type(body).__name__}")
    inventory.group_vars.setdefault(group, {}).update(body.get("vars") or {})
    for host, variables in (body.get("hosts") or {}).items():
        inventory.add_host(str(host), group, variables or {})
    for child, child_body in (body.get("children") or {}).items():
        inventory.children.setdefault(group, set()).add(str(child))
        _yaml_group(inventory, str(child), child_body)


def _ini(inventory: _Ansible, text: str) -> None:
    group, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        where = f"{inventory.path}:{number}"
        if line.startswith("[") and line.endswith("]"):
            group, _, kind = line[1:-1].partition(":")
            kind = kind or "hosts"
            if kind not in ("hosts", "vars", "children"):
                raise InputError(f"{where}: section [{line[1:-1]}] is not a group, :vars or :children")
            continue
        words = line.split("#", 1)[0].split()
        if kind == "vars":
            inventory.group_vars.setdefault(group, {}).update(_ini_vars([line.replace(" = ", "=")], where))
        elif kind == "children":
            inventory.children.setdefault(group, set()).add(words[0])
        else:
            inventory.add_host(words[0], group, _ini_vars(words[1:], where))


# -- keys ------------------------------------------------------------------------------------


def scan_keys(targets: list[Target]) -> dict[str, list[str]]:
    """Each host's keys (known_hosts lines named `[address]:port`); refuses when any host did not answer."""
    found = scan(sorted({(target.address, target.port) for target in targets}))
    silent = [f"{t.name} ({t.address}:{t.port})" for t in targets if not found[(t.address, t.port)]]
    if silent:
        raise InputError(
            f"no host key from {', '.join(silent)} (ssh-keyscan): check the address and port; nothing was written"
        )
    keys = {}
    for target in targets:
        name = target.address if target.port == 22 else f"[{target.address}]:{target.port}"
        keys[target.name] = [" ".join([name, *line.split()[1:3]]) for line in found[(target.address, target.port)]]
    return keys


def accepted_fingerprints(path: str) -> set[str]:
    """The SHA256 fingerprints written anywhere in `path` (`ssh-keygen -lf` output, a list, a CI secret)."""
    found = set(FINGERPRINT_RE.findall(_read(path)))
    if not found:
        raise InputError(f"{path}: no SHA256 fingerprints in it (as `ssh-keygen -lf KEY.pub` prints them)")
    return found


def keep_accepted(keys: dict[str, list[str]], accepted: set[str], source: str) -> dict[str, list[str]]:
    """Only the keys whose fingerprint is in `accepted`; refuses when a host has none of them."""
    kept = {host: [line for line in lines if key_fingerprint(line) in accepted] for host, lines in keys.items()}
    unknown = [
        f"{host} ({', '.join(key_fingerprint(line) for line in keys[host])})"
        for host, lines in kept.items()
        if not lines
    ]
    if unknown:
        raise InputError(
            f"host keys not in {source}: {'; '.join(unknown)}: someone else may answer at those addresses; "
            "nothing was written"
        )
    return kept


def fingerprint_lines(targets: list[Target], keys: dict[str, list[str]]) -> list[str]:
    """`web1  127.0.1.1:2222  ED25519  SHA256:...`, one line per key, to compare with what each host says."""
    lines = []
    for target in targets:
        for line in keys[target.name]:
            lines.append(
                f"{target.name:<16} {target.address}:{target.port:<6} {key_type(line):<8} {key_fingerprint(line)}"
            )
    return lines


# -- writing ---------------------------------------------------------------------------------


def choose_identity(targets: list[Target], given: str | None) -> str:
    if given:  # `~/...` stays so: the inventory then works for whoever runs it (a CI job's home)
        return given if given.startswith("~") else os.path.abspath(given)
    named = sorted({target.identity_file for target in targets if target.identity_file})
    if len(named) > 1:
        raise InputError(f"the hosts name different keys ({', '.join(named)}): choose one with --identity-file")
    if named:
        return os.path.abspath(named[0])
    for candidate in DEFAULT_IDENTITIES:
        if os.path.exists(os.path.expanduser(candidate)):
            return os.path.expanduser(candidate)
    raise InputError("no SSH key found (~/.ssh/id_ed25519, id_ecdsa, id_rsa): pass --identity-file KEY")


def render_inventory(
    targets: list[Target], user: str, deploy_to: str, identity_file: str, known_hosts: str, source: str
) -> str:
    """A commented inventory: the keys a first deploy needs, the usual next ones commented out."""
    q = json.dumps
    lines = [
        f"# Written by `deployer init` from {source}. Every key is checked when loaded; docs/inventory.md",
        "# lists them all (inventories/production.example.yml in the repository shows more).",
        f"deploy_to: {q(deploy_to)}            # each host's releases/, current and shared/ live here",
        f"user: {q(user)}                      # the SSH user the deploy runs as (owns deploy_to)",
        "ssh:",
        f"  identity_file: {q(identity_file)}",
        f"  known_hosts: {q(known_hosts)}      # host keys confirmed by `deployer init`; nothing else is trusted",
        '# validate: "sh bin/check"           # run in the new release on every host before any switch',
        '# health_check: {command: "curl -fsS http://127.0.0.1:8080/health", timeout: 5, retries: 5, interval: 2}',
        '# rollout: {batch: "25%", pause: 10}  # switch in batches; a failing batch is switched back',
        '# shared: ["storage/"]              # kept across releases in deploy_to/shared/',
        '# hooks: {after_switch: "sudo systemctl reload app", after_rollback: "sudo systemctl reload app"}',
        "keep_releases: 5",
        "hosts:",
    ]
    for target in targets:
        fields = [f"address: {q(target.address)}"]
        if target.port != 22:
            fields.append(f"port: {target.port}")
        if target.user and target.user != user:
            fields.append(f"user: {q(target.user)}")
        if target.groups:
            fields.append(f"groups: [{', '.join(q(group) for group in target.groups)}]")
        lines.append(f"  {q(target.name)}: {{{', '.join(fields)}}}")
    return "\n".join(lines) + "\n"


def known_hosts_of(inventory: str) -> str:
    """The known_hosts written beside an inventory: `deploy.yml` -> `deploy.known_hosts`."""
    return os.path.splitext(os.path.abspath(inventory))[0] + ".known_hosts"


def refuse_existing(out: str) -> None:
    """Never replace an inventory or known_hosts someone may have edited (unless --force)."""
    existing = [path for path in (os.path.abspath(out), known_hosts_of(out)) if os.path.exists(path)]
    if existing:
        raise InputError(f"{' and '.join(existing)} already exist: pass --force to replace; nothing was written")


def write(
    targets: list[Target],
    keys: dict[str, list[str]],
    out: str,
    *,
    user: str | None,
    deploy_to: str,
    identity_file: str | None,
    source: str,
    force: bool = False,
) -> Written:
    """Write the inventory and its known_hosts (`<out without .yml>.known_hosts`) after loading them
    from a scratch folder: both or neither, and never over existing files without `force`."""
    if not targets:
        raise InputError(f"{source}: no hosts")
    duplicates = sorted({t.name for t in targets if [u.name for u in targets].count(t.name) > 1})
    if duplicates:
        raise InputError(f"{source}: host names given twice: {', '.join(duplicates)}")
    out = os.path.abspath(out)
    known_hosts = known_hosts_of(out)
    if not force:
        refuse_existing(out)
    users = sorted({t.user for t in targets if t.user})
    chosen_user = user or (max(users, key=lambda u: sum(t.user == u for t in targets)) if users else "deploy")
    identity = choose_identity(targets, identity_file)
    known_text = "".join(line + "\n" for target in targets for line in keys[target.name])
    folder = os.path.dirname(out)
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".deployer-init-") as scratch:
        scratch_known = os.path.join(scratch, os.path.basename(known_hosts))
        scratch_out = os.path.join(scratch, os.path.basename(out))
        Path(scratch_known).write_text(known_text)
        Path(scratch_out).write_text(
            render_inventory(targets, chosen_user, deploy_to, identity, os.path.basename(known_hosts), source)
        )
        load_inventory(scratch_out)  # the file as written must load (a bad name, user, path)
        os.replace(scratch_known, known_hosts)
        os.replace(scratch_out, out)
    return Written(out, known_hosts, targets, keys)


def gather_targets(hosts: str | None, ssh_config: str | None, ansible: str | None) -> tuple[list[Target], str]:
    """The hosts from exactly one source, and a phrase naming it (for the inventory's first line)."""
    given = [
        (value, name) for value, name in ((hosts, "--hosts"), (ssh_config, "--ssh-config"), (ansible, "--ansible"))
    ]
    chosen = [(value, name) for value, name in given if value]
    if len(chosen) != 1:
        raise InputError("name the hosts with exactly one of --hosts LIST, --ssh-config FILE, --ansible FILE")
    value, name = chosen[0]
    readers: dict[str, Callable[[str], list[Target]]] = {
        "--hosts": lambda text: from_host_list(_read(text[1:]) if text.startswith("@") else text),
        "--ssh-config": from_ssh_config,
        "--ansible": from_ansible,
    }
    source = "a host list" if name == "--hosts" else f"{name.lstrip('-').replace('-', '_')} {value}"
    try:
        return readers[name](str(value)), source
    except OSError as exc:
        raise InputError(f"cannot read {value}: {exc.strerror}") from None
