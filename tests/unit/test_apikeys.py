"""genq.common.apikeys: the gateway's keys file, TOML or bare lines, kept only as digests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from genq.common.apikeys import ApiKeys, digest, digest_entry, is_toml, load
from genq.common.errors import KeyFileError
from genq.common.settings import Settings
from genq.common.tenants import DEFAULT_POLICY, TenantPolicy
from genq.producer.cli import cli

SECRET = "sk-acme-secret-1"

TOML = f"""
# two tenants, one key by digest, one admin
[[keys]]
key = "{SECRET}"
tenant = "acme"
weight = 2
max_queued = 1000

[[keys]]
sha256 = "{hashlib.sha256(b"sk-beta").hexdigest().upper()}"
tenant = "beta"
tokens_per_minute = 600

[[keys]]
key = "sk-root"
admin = true
"""


def refused(text: str) -> str:
    with pytest.raises(KeyFileError) as caught:
        load([], text, "keys.toml")
    return str(caught.value)


def test_a_toml_file_maps_each_key_to_its_tenant_role_and_policy() -> None:
    table = load([], TOML)
    acme, beta, root = (table.match(k) for k in (SECRET, "sk-beta", "sk-root"))
    assert acme is not None and (acme.tenant, acme.admin) == ("acme", False)
    assert beta is not None and beta.tenant == "beta"
    assert root is not None and (root.tenant, root.admin) == ("default", True)
    assert table.policies == {
        "acme": TenantPolicy(weight=2, max_queued=1000),
        "beta": TenantPolicy(tokens_per_minute=600),
        "default": DEFAULT_POLICY,
    }
    assert table.match("sk-acme-secret-2") is None and table.match("") is None


def test_the_table_holds_digests_only() -> None:
    table = load(["sk-from-env"], TOML)
    held = repr(table) + "".join(key.digest.hex() + repr(key) for key in table.keys)
    for clear in (SECRET, "sk-root", "sk-from-env"):
        assert clear not in held
    assert digest(SECRET) in {key.digest for key in table.keys}


def test_bare_lines_and_the_variable_are_tenant_default() -> None:
    table = load(["k-env"], "# ops keys\nk-one\n\n  k-two   # a comment\nYWJj==\n")
    for key in ("k-env", "k-one", "k-two", "YWJj=="):
        found = table.match(key)
        assert found is not None and (found.tenant, found.admin) == ("default", False)
    assert table.policies == {}
    assert not is_toml("k-one\nk-two\n") and is_toml("# c\n\n[[keys]]\nkey = 'a'\n")
    assert is_toml('keys = [{key = "a", tenant = "t"}]\n')


def test_no_keys_is_an_open_gateway() -> None:
    assert not load([], None) and not load([], "# nothing yet\n\n")
    assert isinstance(load([], None), ApiKeys)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('[[keys]]\ntenant = "a"\n', "entry 1 (line 1): give either `key` or `sha256`"),
        (f'[[keys]]\nkey = "{SECRET}"\nsha256 = "{"0" * 64}"\n', "not both or neither"),
        ('[[keys]]\nkey = "a"\n\n[[keys]]\nkey = "b"\nweigth = 2\n', "entry 2 (line 4): weigth"),
        ('[[keys]]\nkey = "a"\nweight = 0\n', "weight: Input should be greater than 0"),
        ('[[keys]]\nkey = "a"\nmax_queued = "10"\n', "max_queued"),
        ('[[keys]]\nkey = "a"\nadmin = "yes"\n', "admin"),
        ('[[keys]]\nkey = "a"\ntenant = "a:b"\n', "tenant"),
        ('[[keys]]\nsha256 = "abc"\n', "sha256"),
        ('[[keys]]\nkey = "two words"\n', "key: String should match pattern"),
        (
            '[[keys]]\nkey = "a"\n[other]\nx = 1\n',
            "[[keys]] tables only, one or more (it also holds other)",
        ),
        ('[[keys]]\nkey = "a"\nkey = "b"\n', "not valid TOML"),
        (
            '[[keys]]\nkey = "a"\ntenant = "t"\nweight = 1\n[[keys]]\nkey = "b"\ntenant = "t"\n'
            "weight = 3\n",
            "entry 2 (line 5): tenant t's weight is 3 here but 1 in keys.toml, entry 1 (line 1)",
        ),
        (
            '[[keys]]\nkey = "a"\ntenant = "t"\n[[keys]]\nkey = "a"\ntenant = "u"\n',
            "the same key as keys.toml, entry 1",
        ),
        (f'key = "{SECRET}"\ntenant = "acme"\n', "line 1: not a bare key"),
        (f"k-one\n'{SECRET}'\n", "line 2: not a bare key"),
        ("k-one\n[[keys]]\n", "line 2: not a bare key"),
    ],
)
def test_a_bad_file_is_refused_naming_the_entry_and_never_the_key(text: str, said: str) -> None:
    message = refused(text)
    assert said in message
    assert message.startswith("keys.toml")
    assert SECRET not in message and "two words" not in message


def test_a_tenant_may_give_its_policy_on_one_key_of_several() -> None:
    text = '[[keys]]\nkey = "a"\ntenant = "t"\nweight = 3\n[[keys]]\nkey = "b"\ntenant = "t"\n'
    assert load([], text).policies == {"t": TenantPolicy(weight=3)}


def test_settings_read_the_file_and_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(TOML)
    table = Settings(api_keys="k-env", api_keys_file=path).api_key_table()
    assert {key.tenant for key in table.keys} == {"acme", "beta", "default"}
    assert table.match("k-env") is not None


def test_keys_hash_prints_an_entry_the_file_takes() -> None:
    printed = CliRunner().invoke(cli, ["keys", "hash", "--tenant", "acme"], input=f"{SECRET}\n")
    assert printed.exit_code == 0, printed.output
    assert printed.stdout == digest_entry(SECRET, "acme") + "\n"
    assert SECRET not in printed.output
    found = load([], printed.stdout).match(SECRET)
    assert found is not None and found.tenant == "acme"


def test_keys_hash_refuses_a_bad_tenant_and_an_empty_stdin() -> None:
    bad = CliRunner().invoke(cli, ["keys", "hash", "--tenant", "a b"], input="k\n")
    empty = CliRunner().invoke(cli, ["keys", "hash"], input="")
    assert (bad.exit_code, empty.exit_code) == (2, 2)
    assert "tenant must be" in bad.output and "no key on stdin" in empty.output
