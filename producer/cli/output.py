"""What every `genq` command shares for talking to the user: exit codes, the one-line error,
warnings and notes on stderr, tables on stdout, and terminal-safe text.

Consoles are built where they are used (rich's Console is cheap to build), so that the
package holds no module-level state: a test or a caller that redirects sys.stderr sees
everything."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

EXIT_FAILED = 1  # the job or the service failed
EXIT_USAGE = 2  # bad input: nothing was queued

# Control characters (an ESC from a random model can drive the terminal) shown as U+FFFD on a
# terminal; newline and tab pass. Piped output is left exactly as generated.
_CONTROL = {c: "\ufffd" for c in [*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F]}


def stderr_console() -> Console:
    """A console on stderr, for progress bars, notes and errors (stdout stays the data)."""
    return Console(stderr=True, highlight=False)


def note(markup: str, soft_wrap: bool = True) -> None:
    """One message on stderr, in rich markup (escape what the user or a model wrote)."""
    stderr_console().print(markup, soft_wrap=soft_wrap)


def fail(message: str, code: int) -> NoReturn:
    """genq's one-line error on stderr, then exit with `code`."""
    note(f"[bold red]genq: error:[/] {escape(message)}")
    sys.exit(code)


def terminal_safe(text: str) -> str:
    return text.translate(_CONTROL)


def print_table(table: Table) -> None:
    Console().print(table)


def show(rows: list[tuple[str, str]], data: dict[str, Any], as_json: bool) -> None:
    """A record as `name value` rows, or as JSON for scripts."""
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(show_header=False, box=None)
    for name, value in rows:
        table.add_row(f"[bold]{name}[/]", escape(value))
    print_table(table)
