"""Inventory checking: clear errors naming file and key; never a traceback."""

from __future__ import annotations

import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployer.errors import InputError, InventoryError
from deployer.inventory import load_inventory, parse_inventory


@pytest.fixture
def keyfiles(tmp_path):
    (tmp_path / "id").write_text("key")
    (tmp_path / "kh").write_text("")
    return tmp_path


def inv(keyfiles, body: str):
    path = keyfiles / "inv.yml"
    text = textwrap.dedent(body)
    path.write_text(text)
    return str(path), text


GOOD = """\
deploy_to: /srv/app
user: deploy
ssh: {identity_file: id, known_hosts: kh}
validate: "sh bin/check"
hosts:
  web1: {address: 10.0.0.11}
  web2: {address: 10.0.0.12, port: 2222}
"""


def test_good_inventory(keyfiles):
    path, _ = inv(keyfiles, GOOD)
    inventory = load_inventory(path)
    assert [h.name for h in inventory.hosts] == ["web1", "web2"]
    assert inventory.hosts[0].port == 22 and inventory.hosts[1].port == 2222
    assert inventory.identity_file == str(keyfiles / "id")  # relative to the inventory file
    assert inventory.validate == "sh bin/check"
    assert inventory.hosts[0].user == "deploy"


@pytest.mark.parametrize(
    "change, key, words",
    [
        (("validate:", "valdiate:"), "valdiate", "unknown key"),
        (("port: 2222", "port: abc"), "hosts.web2.port", "integer"),
        (("port: 2222", "port: 70000"), "hosts.web2.port", "between"),
        (("deploy_to: /srv/app", "deploy_to: srv/app"), "deploy_to", "absolute"),
        (("deploy_to: /srv/app", "deploy_to: /"), "deploy_to", "not '/'"),
        (("deploy_to: /srv/app", "deploy_to: /srv/../etc"), "deploy_to", "'..'"),
        (("user: deploy", "user: [a]"), "user", "expected a string"),
        (("user: deploy", "user: 'de ploy'"), "user", "not a valid user name"),
        (("known_hosts: kh", "known_hosts: nothere"), "ssh.known_hosts", "file not found"),
        (("{address: 10.0.0.11}", "{addr: 10.0.0.11}"), "hosts.web1.addr", "unknown key"),
        (("{address: 10.0.0.11}", "{port: 22}"), "hosts.web1.address", "required"),
        (
            ("{address: 10.0.0.11}", "{address: '10.0.0.11; rm -rf /'}"),
            "hosts.web1.address",
            "not a valid address",
        ),
        (("web1:", "'web 1':"), "hosts.web 1", "host names"),
        (("{address: 10.0.0.11}", "{address: 10.0.0.12, port: 2222}"), "hosts.web2.address", "already used"),
        (("user: deploy\n", ""), "user", "required key is missing"),
        (("validate:", "rollout: {batch: lots}\nvalidate:"), "rollout.batch", "percentage"),
        (("validate:", "rollout: {batch: '150%'}\nvalidate:"), "rollout.batch", "percentage"),
        (("validate:", "rollout: {batch: 0}\nvalidate:"), "rollout.batch", "between"),
        (("validate:", "rollout: {pace: 3}\nvalidate:"), "rollout.pace", "unknown key"),
        (("validate:", "health_check: {timeout: 3}\nvalidate:"), "health_check.command", "required"),
        (("validate:", "health_check: {command: x, retries: -1}\nvalidate:"), "health_check.retries", "between"),
        (("validate:", "shared: ['../etc']\nvalidate:"), "shared[0]", "relative path"),
        (("validate:", "shared: [.env, /etc/passwd]\nvalidate:"), "shared[1]", "relative path"),
        (("validate:", "shared: [storage/, storage]\nvalidate:"), "shared[1]", "listed twice"),
        (("validate:", "shared: .env\nvalidate:"), "shared", "list"),
        (("validate:", "hooks: {after_swtich: x}\nvalidate:"), "hooks.after_swtich", "unknown key"),
        (("validate:", "keep_releases: 0\nvalidate:"), "keep_releases", "between"),
        (("validate:", "fetch_parallel: 0\nvalidate:"), "fetch_parallel", "between"),
        (("validate:", "fetch_parallel: some\nvalidate:"), "fetch_parallel", "integer"),
        (("validate:", "timeouts: {hook: 0}\nvalidate:"), "timeouts.hook", "between"),
        (("validate:", "signatures: {require: true}\nvalidate:"), "signatures.allowed_signers", "required"),
        (("validate:", "signatures: {allowed_signers: nothere}\nvalidate:"), "signatures.allowed_signers", "not found"),
        (
            ("validate:", "signatures: {allowed_signers: kh, require: yes-please}\nvalidate:"),
            "signatures.require",
            "true",
        ),
        (
            ("validate:", "signatures: {allowed_signers: kh, namespace: 'a b'}\nvalidate:"),
            "signatures.namespace",
            "not",
        ),
        (("validate:", "signatures: {allowed_signers: kh, revokd: kh}\nvalidate:"), "signatures.revokd", "unknown key"),
        (
            ("web1: {address: 10.0.0.11}", "web1: {address: 10.0.0.11, signatures: {allowed_signers: none}}"),
            "hosts.web1.signatures.allowed_signers",
            "not found",
        ),
    ],
)
def test_errors_name_file_key_and_problem(keyfiles, change, key, words):
    old, new = change
    assert old in GOOD
    path, _ = inv(keyfiles, GOOD.replace(old, new, 1))
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    message = str(caught.value)
    assert message.startswith(path)
    assert caught.value.key == key, message
    assert words in message


def test_signatures_section(keyfiles):
    path, _ = inv(keyfiles, GOOD + "signatures: {allowed_signers: kh, require: true, revoked: id}\n")
    signatures = load_inventory(path).signatures
    assert signatures is not None and signatures.require and signatures.namespace == "deployer-release"
    assert signatures.allowed_signers == str(keyfiles / "kh") and signatures.revoked == str(keyfiles / "id")
    path, _ = inv(keyfiles, GOOD)
    assert load_inventory(path).signatures is None


def test_a_group_signs_with_its_own_signers(keyfiles):
    (keyfiles / "ops_signers").write_text("")
    body = GOOD.replace("  web1: {address: 10.0.0.11}", "  web1: {address: 10.0.0.11, groups: [ops]}")
    body += "signatures: {allowed_signers: kh}\n"
    body += "groups:\n  ops: {signatures: {allowed_signers: ops_signers, require: true}}\n"
    inventory = load_inventory(inv(keyfiles, body)[0])
    ops, web2 = (inventory.signatures_of(inventory.host(name)) for name in ("web1", "web2"))
    assert ops is not None and ops.allowed_signers == str(keyfiles / "ops_signers") and ops.require
    assert web2 == inventory.signatures
    assert inventory.signature_settings() == (ops, inventory.signatures)
    (keyfiles / "big").write_text("x" * 20000)
    with pytest.raises(InventoryError, match="groups.ops.signatures.allowed_signers: .* is over 16 KiB"):
        load_inventory(inv(keyfiles, body.replace("ops_signers", "big"))[0])


def test_duplicate_keys_are_rejected(keyfiles):
    path, _ = inv(keyfiles, GOOD + "  web1: {address: 10.0.0.99}\n")
    with pytest.raises(InventoryError, match="duplicate key 'web1'"):
        load_inventory(path)


def test_yaml_syntax_error_has_a_line(keyfiles):
    path, _ = inv(keyfiles, "deploy_to: [\n")
    with pytest.raises(InventoryError, match=r"invalid YAML at line \d+"):
        load_inventory(path)


def test_missing_file(tmp_path):
    with pytest.raises(InventoryError, match="not found"):
        load_inventory(str(tmp_path / "none.yml"))


def test_empty_and_non_mapping(keyfiles):
    for body in ("", "- a\n- b\n", "just text\n"):
        path, _ = inv(keyfiles, body)
        with pytest.raises(InventoryError):
            load_inventory(path)


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["deploy_to", "user", "ssh", "hosts", "validate", "parallel", "timeouts", "x"]),
        yaml_values,
        max_size=7,
    )
)
def test_any_structure_gives_inventory_or_clear_error(data):
    import yaml

    text = yaml.safe_dump(data)
    try:
        parse_inventory(text, "/nonexistent/inv.yml")
    except InventoryError as error:
        assert str(error).startswith("/nonexistent/inv.yml")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_inventory_or_clear_error(text):
    try:
        parse_inventory(text, "inv.yml")
    except InventoryError as error:
        assert str(error).startswith("inv.yml")


def test_rollout_health_hooks_and_shared_are_read(keyfiles):
    extra = (
        "rollout: {batch: '25%', pause: 1.5}\n"
        "health_check: {command: 'curl -fsS localhost/health', timeout: 3, retries: 4, interval: 0.5}\n"
        "shared: [.env, storage/]\n"
        "hooks: {after_switch: 'systemctl reload app', after_rollback_local: './purge-cdn'}\n"
        "keep_releases: 3\n"
        "migrate: bin/migrate\n"
    )
    path, _ = inv(keyfiles, GOOD.replace("validate:", extra + "validate:", 1))
    inventory = load_inventory(path)
    assert inventory.rollout.percent == 25 and inventory.rollout.pause == 1.5
    assert [inventory.rollout.batch_size(n) for n in (1, 4, 5, 100)] == [1, 1, 2, 25]
    assert inventory.health_check is not None and inventory.health_check.retries == 4
    assert inventory.shared == (".env", "storage/")
    assert inventory.hook("after_switch") == "systemctl reload app" and inventory.hook("before_switch") == ""
    assert inventory.keep_releases == 3 and inventory.migrate == "bin/migrate"


def test_health_check_may_be_a_plain_command(keyfiles):
    path, _ = inv(keyfiles, GOOD.replace("validate:", "health_check: 'test -f ok'\nvalidate:", 1))
    health = load_inventory(path).health_check
    assert health is not None and health.command == "test -f ok" and health.retries == 3


def test_env_values_secrets_and_passphrase(keyfiles):
    extra = (
        "env:\n"
        "  APP_ENV: production\n"
        "  PORT: 8080\n"
        "  DB_PASSWORD: {from_env: SOURCE_PW, secret: true}\n"
        "  API_TOKEN: {value: 'inline token', secret: true}\n"
    )
    text = GOOD.replace("validate:", extra + "validate:", 1).replace(
        "known_hosts: kh", "known_hosts: kh, passphrase_env: KEY_PW"
    )
    path, _ = inv(keyfiles, text)
    inventory = parse_inventory(open(path).read(), path, environ={"SOURCE_PW": "s3cr3t $(x)", "KEY_PW": "phrase"})
    assert [(v.name, v.value, v.secret) for v in inventory.env] == [
        ("APP_ENV", "production", False),
        ("PORT", "8080", False),
        ("DB_PASSWORD", "s3cr3t $(x)", True),
        ("API_TOKEN", "inline token", True),
    ]
    assert sorted(inventory.secrets()) == ["inline token", "phrase", "s3cr3t $(x)"]
    assert "s3cr3t" not in repr(inventory) and "phrase'" not in repr(inventory)


@pytest.mark.parametrize(
    "extra, key, words",
    [
        ("env: {X: {from_env: NOT_SET_ANYWHERE}}\n", "env.X.from_env", "$NOT_SET_ANYWHERE is not set"),
        ("env: {'bad-name': 1}\n", "env.bad-name", "variable names"),
        ("env: {DEPLOYER_RELEASE: 1}\n", "env.DEPLOYER_RELEASE", "DEPLOYER_"),
        ("env: {X: {secret: true}}\n", "env.X", "exactly one of"),
        ("env: {X: {value: a, secret: maybe}}\n", "env.X.secret", "true or false"),
    ],
)
def test_env_errors(keyfiles, extra, key, words):
    path, _ = inv(keyfiles, GOOD.replace("validate:", extra + "validate:", 1))
    with pytest.raises(InventoryError) as caught:
        parse_inventory(open(path).read(), path, environ={})
    assert caught.value.key == key and words in str(caught.value)


GROUPED = """\
deploy_to: /srv/app
user: deploy
ssh: {identity_file: id, known_hosts: kh}
groups:
  web: {port: 2200}
  worker: {user: jobs, port: 2300}
hosts:
  web1: {address: 10.0.0.11, groups: [web]}
  web2: {address: 10.0.0.12, groups: [web], port: 2222}
  job1: {address: 10.0.0.21, groups: [worker, web]}
  db1: {address: 10.0.0.31}
"""


def test_groups_give_settings_in_order_host_then_first_group_then_inventory(keyfiles):
    inventory = load_inventory(inv(keyfiles, GROUPED)[0])
    by_name = {host.name: host for host in inventory.hosts}
    assert (by_name["web1"].port, by_name["web1"].user) == (2200, "deploy")
    assert by_name["web2"].port == 2222  # the host's own setting wins
    assert (by_name["job1"].port, by_name["job1"].user, by_name["job1"].groups) == (2300, "jobs", ("worker", "web"))
    assert (by_name["db1"].port, by_name["db1"].groups) == (22, ())


def test_select_by_hosts_and_groups(keyfiles):
    inventory = load_inventory(inv(keyfiles, GROUPED)[0])
    assert [h.name for h in inventory.select(groups=("web",)).hosts] == ["web1", "web2", "job1"]
    assert [h.name for h in inventory.select(hosts=("db1",), groups=("worker",)).hosts] == ["job1", "db1"]
    assert inventory.select() is inventory
    with pytest.raises(InputError, match="--hosts: web9 not in"):
        inventory.select(hosts=("web9",))
    with pytest.raises(InputError, match="--group: cache not in .*groups: web, worker"):
        inventory.select(groups=("cache",))


def test_group_errors_name_the_group_key(keyfiles):
    path, _ = inv(keyfiles, GROUPED.replace("{user: jobs, port: 2300}", "{user: jobs, port: high}"))
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert caught.value.key == "groups.worker.port"
    path, _ = inv(keyfiles, GROUPED.replace("groups: [web]}", "groups: web}", 1))
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert caught.value.key == "hosts.web1.groups" and "list" in str(caught.value)


def test_shipped_example_inventories_stay_valid(tmp_path):
    """inventories/*.yml are parsed with their files swapped for stand-ins: they must follow the schema."""
    from tests.conftest import REPO

    (tmp_path / "key").write_text("key")
    (tmp_path / "known").write_text("")
    environ = {"DEPLOY_KEY_PASSPHRASE": "x", "SHOP_DATABASE_URL": "postgres://x"}
    for example in sorted((REPO / "inventories").glob("*.yml")):
        lines = []
        for line in example.read_text().splitlines():
            if line.strip().startswith("identity_file:"):
                line = f"  identity_file: {tmp_path / 'key'}"
            elif line.strip().startswith("known_hosts:"):
                line = f"  known_hosts: {tmp_path / 'known'}"
            lines.append(line)
        inventory = parse_inventory("\n".join(lines), str(example), environ=environ)
        assert inventory.hosts, example


OVERRIDES = """\
deploy_to: /srv/app
user: deploy
ssh: {identity_file: id, known_hosts: kh, config: ssh_config}
gateway: jump@10.0.0.1:2200
groups:
  web: {deploy_to: /srv/web, sudo: true}
  lan: {gateway: false}
hosts:
  web1: {address: 10.0.0.11, groups: [web]}
  web2: {address: 10.0.0.12, groups: [web], deploy_to: /srv/own}
  db1: {address: 10.0.0.21, groups: [lan]}
  app-a:
  b: {ssh_alias: app-b, port: 2022}
"""

SSH_CONFIG = """\
Host app-a
  HostName 192.168.56.10
  Port 2201
  User vagrant
  IdentityFile vagrant_key
Host app-b
  HostName 192.168.56.11
  ProxyJump ops@bastion
Host bastion
  HostName 203.0.113.5
  Port 2022
  IdentityFile vagrant_key
"""


def test_overrides_ssh_config_aliases_and_gateways(keyfiles):
    (keyfiles / "ssh_config").write_text(SSH_CONFIG)
    (keyfiles / "vagrant_key").write_text("key")
    path, _ = inv(keyfiles, OVERRIDES)
    inventory = load_inventory(path)
    hosts = {host.name: host for host in inventory.hosts}
    assert {name: inventory.deploy_to_of(host) for name, host in hosts.items()} == {
        "web1": "/srv/web",
        "web2": "/srv/own",  # the host's own beats its group's
        "db1": "/srv/app",
        "app-a": "/srv/app",
        "b": "/srv/app",
    }
    assert [name for name, host in hosts.items() if host.sudo] == ["web1", "web2"]
    assert str(hosts["web1"].gateway) == "jump@10.0.0.1:2200"  # the inventory's gateway
    assert hosts["db1"].gateway is None  # gateway: false in its group
    app_a = hosts["app-a"]  # everything from the ssh_config entry
    assert (app_a.address, app_a.port, app_a.user) == ("192.168.56.10", 2201, "vagrant")
    assert inventory.identity_file_of(app_a) == str(keyfiles / "vagrant_key")
    assert str(app_a.gateway) == "jump@10.0.0.1:2200"  # no ProxyJump of its own: the inventory's gateway
    b = hosts["b"]
    assert (b.address, b.port, b.user) == ("192.168.56.11", 2022, "deploy")  # the inventory's port beats ssh_config's
    assert str(b.gateway) == "ops@203.0.113.5:2022"  # ProxyJump through an alias of the same file
    assert b.gateway is not None and b.gateway.identity_file == str(keyfiles / "vagrant_key")  # the alias's key


@pytest.mark.parametrize(
    "change, key, words",
    [
        (("gateway: jump@10.0.0.1:2200", "gateway: 'a b'"), "gateway", "not a gateway"),
        (("gateway: jump@10.0.0.1:2200", "gateway: {port: 22}"), "gateway.address", "required"),
        (("  app-a:\n", "  ghost:\n"), "hosts.ghost", "no Host entry for 'ghost'"),
        (("{ssh_alias: app-b, port: 2022}", "{ssh_alias: app-b, address: 10.1.1.1}"), "hosts.b.ssh_alias", "either"),
        (("sudo: true}", "sudo: yes please}"), "groups.web.sudo", "true or false"),
        (("deploy_to: /srv/own", "deploy_to: relative"), "hosts.web2.deploy_to", "absolute"),
        (("hosts:\n", "sudo_password: hunter2\nhosts:\n"), "sudo_password", "never write a password"),
        (("hosts:\n", "sudo_password_env: NOT_SET_ANYWHERE_42\nhosts:\n"), "sudo_password_env", "is not set"),
    ],
)
def test_override_and_ssh_config_errors_name_the_key(keyfiles, change, key, words):
    (keyfiles / "ssh_config").write_text(SSH_CONFIG)
    (keyfiles / "vagrant_key").write_text("key")
    path, _ = inv(keyfiles, OVERRIDES.replace(*change))
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert caught.value.key == key
    assert words in str(caught.value)


def test_proxycommand_and_multi_hop_jumps_are_refused_clearly(keyfiles):
    (keyfiles / "vagrant_key").write_text("key")
    for config, words in (
        (SSH_CONFIG.replace("ProxyJump ops@bastion", "ProxyCommand nc %h %p"), "ProxyCommand"),
        (SSH_CONFIG.replace("ProxyJump ops@bastion", "ProxyJump a@x,b@y"), "only one jump host"),
        (SSH_CONFIG + "  ProxyJump further@away\n", "only one hop"),
    ):
        (keyfiles / "ssh_config").write_text(config)
        path, _ = inv(keyfiles, OVERRIDES)
        with pytest.raises(InventoryError, match=words):
            load_inventory(path)


def test_a_sudo_password_needs_a_host_that_uses_sudo(keyfiles, monkeypatch):
    monkeypatch.setenv("PW_FOR_TEST", "secret-pw")
    path, _ = inv(keyfiles, GOOD + "sudo_password_env: PW_FOR_TEST\n")
    with pytest.raises(InventoryError, match="no host uses sudo"):
        load_inventory(path)
    path, _ = inv(keyfiles, GOOD + "sudo: true\nsudo_password_env: PW_FOR_TEST\n")
    inventory = load_inventory(path)
    assert inventory.sudo_password == "secret-pw" and "secret-pw" in inventory.secrets()
    assert "secret-pw" not in repr(inventory)


# A valid inventory (real key and known_hosts files) with one or more sections replaced by
# arbitrary YAML: the fuzzing reaches hosts, groups, env, gateway, ssh_config and the rest, instead
# of stopping at ssh.identity_file. Each outcome is an Inventory or an InventoryError naming the file.
FUZZ_DIR = tempfile.mkdtemp(prefix="deployer-inventory-fuzz-")
for _name in ("id", "kh"):
    Path(FUZZ_DIR, _name).write_text("")
FUZZED_SECTIONS = [
    "hosts",
    "groups",
    "env",
    "gateway",
    "rollout",
    "health_check",
    "hooks",
    "shared",
    "timeouts",
    "keep_releases",
    "keep_failed_releases",
    "sudo",
    "sudo_password_env",
    "parallel",
    "fetch_parallel",
    "deploy_to",
    "user",
    "validate",
    "migrate",
    "rollback_migrations",
]
host_settings = st.dictionaries(
    st.sampled_from(["address", "port", "user", "groups", "deploy_to", "gateway", "sudo", "ssh_alias", "x"]),
    yaml_values,
    max_size=4,
)
ssh_config_text = st.lists(
    st.sampled_from(
        [
            "Host web1",
            "Host *",
            "  HostName 10.0.0.9",
            "  Port 2200",
            "  User ops",
            "  ProxyJump b",
            "  IdentityFile id",
            "  Port nope",
            "Match all",
            "  ProxyCommand nc %h %p",
            "Host b",
            "  HostName 10.0.0.1",
        ]
    )
    | st.text(max_size=20),
    max_size=8,
)


@settings(max_examples=400, deadline=None)
@given(
    sections=st.dictionaries(st.sampled_from(FUZZED_SECTIONS), yaml_values, max_size=3),
    hosts=st.dictionaries(st.sampled_from(["web1", "web2", "bad name", ""]), host_settings, min_size=1, max_size=3),
    config=st.none() | ssh_config_text,
)
def test_fuzzed_sections_of_a_valid_inventory_give_inventory_or_clear_error(sections, hosts, config):
    import yaml

    ssh = {"identity_file": str(Path(FUZZ_DIR, "id")), "known_hosts": str(Path(FUZZ_DIR, "kh"))}
    if config is not None:
        config_path = Path(FUZZ_DIR, "ssh_config")
        config_path.write_text("\n".join(config) + "\n")
        ssh["config"] = str(config_path)
    data = {"deploy_to": "/srv/app", "user": "deploy", "ssh": ssh, "hosts": hosts, **sections}
    path = str(Path(FUZZ_DIR, "inv.yml"))
    try:
        parse_inventory(yaml.safe_dump(data), path, environ={"TOKEN": "x"})
    except InventoryError as error:
        assert str(error).startswith(path)
        assert error.key or error.problem


def test_the_fuzzed_base_inventory_itself_is_valid():
    """The fuzzer's starting point parses: its examples really reach the fuzzed sections."""
    import yaml

    data = {
        "deploy_to": "/srv/app",
        "user": "deploy",
        "ssh": {"identity_file": str(Path(FUZZ_DIR, "id")), "known_hosts": str(Path(FUZZ_DIR, "kh"))},
        "hosts": {"web1": {"address": "10.0.0.1"}},
    }
    assert [host.name for host in parse_inventory(yaml.safe_dump(data), "inv.yml").hosts] == ["web1"]


def test_fetch_parallel_is_no_cap_unless_given(keyfiles):
    path, _ = inv(keyfiles, GOOD)
    assert load_inventory(path).fetch_parallel == 0
    path, _ = inv(keyfiles, GOOD.replace("validate:", "fetch_parallel: 5\nvalidate:", 1))
    assert load_inventory(path).fetch_parallel == 5
