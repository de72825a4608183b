"""What every `genq` command shares for talking to the user: exit codes, the one-line error,
warnings and notes on stderr, tables on stdout, and terminal-safe text.

Consoles are built where they are used (rich's Console is cheap to build), so that the
package holds no module-level state: a test or a caller that redirects sys.stderr sees
everything."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

EXIT_FAILED = 1  # the job or the service failed
EXIT_USAGE = 2  # bad input: nothing was queued

# Control characters (an ESC from a random model can drive the terminal) shown as U+FFFD on a
# terminal; newline and tab pass. Piped output is left exactly as generated.
_CONTROL = {c: "\ufffd" for c in [*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F]}
# A table's cell on one line: a newline or tab in a value (a path, a worker's name) would break
# its record's line or the columns.
_CELL = {**_CONTROL, 0x09: "\ufffd", 0x0A: "\ufffd"}


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


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Records under their column names, never a cell cut short: a table on a terminal wide
    enough for every cell whole; piped, one record per line, columns aligned (for grep and
    awk; --json is for programs); on a narrower terminal, each record as `column value`
    lines, as `genq status` shows one."""
    console = Console()
    cells = [[cell.translate(_CELL) for cell in row] for row in rows]
    if not console.is_terminal:
        click.echo("\n".join(_aligned([list(columns), *cells])))
        return
    table = Table(*columns)
    for row in cells:
        table.add_row(*(escape(cell) for cell in row))  # a name like `[gemma]` is not markup
    unbounded = console.options.update_width(sys.maxsize)
    if Measurement.get(console, unbounded, table).maximum <= console.width:
        console.print(table)
        return
    for index, row in enumerate(cells):
        if index:
            console.print()
        print_fields(list(zip(columns, row, strict=True)))


def _aligned(rows: list[list[str]]) -> list[str]:
    """Each row on a line, its columns padded to align, the last one not padded."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return ["  ".join([*map(str.ljust, row, widths), row[-1]]) for row in rows]


def print_fields(rows: list[tuple[str, str]]) -> None:
    """A record as `name value` lines, names aligned. A long value runs on for the terminal to
    wrap: nothing is cut, and a name or id copied from it is whole."""
    width = max(len(name) for name, _ in rows)
    console = Console(highlight=False)
    for name, value in rows:
        line = Text.assemble((name.ljust(width), "bold"), "  ", terminal_safe(value))
        console.print(line, soft_wrap=True)


def show(rows: list[tuple[str, str]], data: dict[str, Any], as_json: bool) -> None:
    """A record as `name value` lines, or as JSON for scripts."""
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    print_fields(rows)
