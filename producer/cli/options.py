"""Option values more than one command group takes: durations (`--expires-in`), the job
priority (`--priority`) and the tenant (`--tenant`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import click

from genq.common.schemas import DEFAULT_PRIORITY, PRIORITY_MAX, PRIORITY_MIN
from genq.common.tenants import DEFAULT_TENANT

F = TypeVar("F", bound=Callable[..., Any])

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_duration(text: str) -> float:
    """`90`, `90s`, `15m`, `2h` or `1d`, in seconds."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match or float(match[1]) <= 0:
        raise click.BadParameter(f"{text!r} is not a duration (e.g. 90s, 15m, 2h, 1d)")
    return float(match[1]) * _UNIT_S[match[2]]


def seconds(duration: str | None) -> float | None:
    return parse_duration(duration) if duration else None


def priority_option(command: F) -> F:
    """`--priority`, as `genq run` and `genq submit` take it."""
    return click.option(
        "--priority",
        type=click.IntRange(PRIORITY_MIN, PRIORITY_MAX),
        default=DEFAULT_PRIORITY,
        show_default=True,
        help="0-9; a job of higher priority is started before waiting jobs of lower priority.",
    )(command)


def tenant_option(command: F) -> F:
    """`--tenant`, as every command that submits takes it."""
    return click.option(
        "--tenant",
        default=DEFAULT_TENANT,
        show_default=True,
        help="Whose work this is: its fair share and quotas are the tenant's (1-64 letters, "
        "digits, '.', '_' or '-').",
    )(command)
