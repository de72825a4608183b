"""Registry commands: `genq models` (the models the registry knows, and their queues),
`genq workers` (the running workers and what they serve) and `genq make-tiny-model` (genq's
built-in test model, written to a file)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from genq.common.host import Host
from genq.common.registry import AnyModelConfig, ModelRegistry, RemoteModelConfig, chat_rendering
from genq.common.routing import queue_name
from genq.common.schemas import WorkerInfo
from genq.common.settings import Settings, redact_url
from genq.common.tinymodel import write_tiny_model
from genq.producer.cli.output import note, print_table
from genq.producer.client import Client


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def models(settings: Settings, /, as_json: bool) -> None:
    """List the models in the registry (GENQ_MODELS_FILE plus the built-in `tiny` and
    `gemma-3-270m`). A built-in model whose package is missing is listed as not installed,
    with the command that installs it."""
    registry = ModelRegistry.from_settings(settings)
    rows = [_model_row(name, registry.get(name)) for name in registry.names()]
    rows += [_missing_row(name, command) for name, command in registry.missing.items()]
    rows.sort(key=lambda row: str(row["name"]))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    print_table(MODEL_COLUMNS, [_model_cells(row) for row in rows])


MODEL_COLUMNS = ("name", "backend", "device", "queue", "n_ctx", "chat", "file or server")


def _model_cells(row: dict[str, Any]) -> tuple[str, ...]:
    """A model's row of `genq models`' table, in MODEL_COLUMNS' order."""
    where = row.get("path") or row.get("base_url", "")
    if not row["installed"]:
        where = f"not installed: {row['install']}"
    n_ctx = str(row.get("n_ctx") or "server's")
    chat = _CHAT_MARKS.get(row.get("chat"), "server's")
    return (row["name"], row["backend"], row["device"], row["queue"], n_ctx, chat, str(where))


# How `genq models` shows a chat's rendering (row["chat"]): no template means a transcript.
_CHAT_MARKS = {"template": "template", "transcript": "no template: transcript", None: "?"}


def _model_row(name: str, config: AnyModelConfig) -> dict[str, Any]:
    """A registry entry for display: a remote server's URL without any password in it."""
    row = {
        "name": name,
        "queue": queue_name(config.device, name),
        "installed": True,
        **config.model_dump(mode="json"),
    }
    if isinstance(config, RemoteModelConfig):
        row["base_url"] = redact_url(config.base_url)
    else:
        row["chat"] = chat_rendering(name, config)
    return row


def _missing_row(name: str, command: str) -> dict[str, Any]:
    """A built-in model whose package is not installed: its name, queue and install command."""
    return {
        "name": name,
        "queue": queue_name("cpu", name),
        "installed": False,
        "install": command,
        "backend": "llama",
        "device": "cpu",
        "chat": None,
    }


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def workers(settings: Settings, /, as_json: bool) -> None:
    """List the running workers by host: host (its name, and the address it reaches Redis
    from, which tells apart hosts of one name), worker name, device class, models served,
    last heartbeat.

    A worker records itself when ready and refreshes that every GENQ_HEARTBEAT_INTERVAL_S; one
    that misses three heartbeats (killed, host gone) is no longer listed.
    """
    with Client(settings) as client:
        found = sorted(client.workers(), key=_by_host)
    if as_json:
        click.echo(json.dumps([info.model_dump(mode="json") for info in found], indent=2))
        return
    if not found:
        note("no running workers: start one with `genq worker`", soft_wrap=False)
        return
    now_ms = time.time_ns() // 10**6
    rows = [
        (
            str(Host(info.hostname, info.address)),
            info.name,
            info.device,
            ", ".join(info.models),
            _ago(now_ms - info.heartbeat_ms),
        )
        for info in found
    ]
    print_table(("host", "name", "device", "models", "last seen"), rows)


def _by_host(info: WorkerInfo) -> tuple[str, str, str]:
    """A host's workers together, hosts by name, then address."""
    return info.hostname, info.address or "", info.name


def _ago(ms: int) -> str:
    return f"{max(ms, 0) / 1000:.1f}s ago"


@click.command("make-tiny-model")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Weights seed.")
def make_tiny_model(path: Path, seed: int) -> None:
    """Write genq's tiny test model (random weights, byte-level vocabulary) to PATH.

    The same seed always gives the same bytes. The text it generates is nonsense; it exists
    so that tests and demos run real loading, tokenization and sampling anywhere.
    """
    written = write_tiny_model(path, seed=seed)
    click.echo(f"wrote {written} ({written.stat().st_size:,} bytes)")
