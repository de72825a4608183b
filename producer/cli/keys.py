"""Keys commands: `genq keys hash` (the keys-file entry of a key, by its SHA-256 digest, so
that the gateway's keys file holds no key in clear)."""

from __future__ import annotations

import re
import secrets
import sys

import click

from genq.common.apikeys import KEY_PATTERN, digest_entry
from genq.common.tenants import check_tenant
from genq.producer.cli.options import tenant_option
from genq.producer.cli.output import EXIT_USAGE, fail, note

NEW_KEY_BYTES = 32


@click.group()
def keys() -> None:
    """The gateway's API keys (GENQ_API_KEYS_FILE)."""


@keys.command("hash")
@tenant_option
@click.option("--admin", is_flag=True, help="The key sees every tenant's work.")
@click.option("--new", is_flag=True, help="Make a new random key; it is printed once, on stderr.")
def hash_(tenant: str, admin: bool, new: bool) -> None:
    """Print a key's keys-file entry, by its SHA-256 digest.

    Append it to the file that GENQ_API_KEYS_FILE names (add `weight`, `max_queued`,
    `tokens_per_minute` as wanted): the file then holds no key in clear.

    The key is read from stdin, one per line (several keys: several entries), or asked for
    without echo on a terminal; it is never an argument, which would leave it in the shell's
    history. With --new, a random key is made instead.
    """
    check_tenant(tenant)
    for key in _keys(new):
        click.echo(digest_entry(key, tenant, admin))


def _keys(new: bool) -> list[str]:
    if new:
        key = f"sk-genq-{secrets.token_urlsafe(NEW_KEY_BYTES)}"
        note(f"new key (shown once; give it to its holder): {key}")
        return [key]
    if sys.stdin.isatty():
        given = [click.prompt("key", hide_input=True, err=True)]
    else:
        given = [line.strip() for line in sys.stdin.read().splitlines() if line.strip()]
    if not given:
        fail("no key on stdin (or use --new)", EXIT_USAGE)
    bad = [n for n, key in enumerate(given, 1) if not re.match(KEY_PATTERN, key)]
    if bad:
        fail(f"key {bad[0]}: a key is printable ASCII without spaces", EXIT_USAGE)
    return given
