"""The `genq` command line. Every command reads its settings from GENQ_* environment
variables (see `common/settings.py`); `--redis-url` overrides GENQ_REDIS_URL."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from common.errors import GenqError, InvalidJob
from common.frames import TokenFrame
from common.registry import ModelRegistry
from common.settings import Settings
from common.tinymodel import write_tiny_model
from producer.client import Client, JobHandle
from producer.core import describe_validation

# Control characters (an ESC from a random model can drive the terminal) shown as U+FFFD on a
# terminal; newline and tab pass. Piped output is left exactly as generated.
_CONTROL = {c: "\ufffd" for c in [*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F]}
EXIT_FAILED = 1  # the job or the service failed
EXIT_USAGE = 2  # bad input: nothing was queued
stderr = Console(stderr=True, highlight=False)


class _Cli(click.Group):
    """Shows genq's errors as one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InvalidJob as exc:
            _fail(str(exc), EXIT_USAGE)
        except GenqError as exc:
            _fail(str(exc), EXIT_FAILED)
        except ValidationError as exc:
            _fail(f"invalid settings: {describe_validation(exc)}", EXIT_USAGE)


def _fail(message: str, code: int) -> NoReturn:
    stderr.print(f"[bold red]genq: error:[/] {escape(message)}", soft_wrap=True)
    sys.exit(code)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--redis-url",
    envvar="GENQ_REDIS_URL",
    metavar="URL",
    help="Redis for broker and streams [env GENQ_REDIS_URL; default redis://localhost:6379/0].",
)
@click.pass_context
def cli(ctx: click.Context, redis_url: str | None) -> None:
    """genq: a distributed queue for batch and streaming text generation.

    Producers submit jobs; Celery workers run GGUF models (llama-cpp-python) and stream
    tokens over Redis. Configuration comes from GENQ_* environment variables.
    """
    if redis_url:
        os.environ["GENQ_REDIS_URL"] = redis_url  # so `genq worker`'s celery sees it too
    ctx.obj = Settings()


@cli.command()
@click.argument("prompt")
@click.option(
    "-m", "--model", default="tiny", show_default=True, help="Model name from the registry."
)
@click.option(
    "-n",
    "--max-tokens",
    type=int,
    default=256,
    show_default=True,
    help="Tokens to generate at most.",
)
@click.option("--seed", type=int, help="Sampler seed (same seed, same text); random if omitted.")
@click.option(
    "-t", "--temperature", type=float, default=0.8, show_default=True, help="0 is greedy."
)
@click.option("--top-p", type=float, default=0.95, show_default=True)
@click.option("--top-k", type=int, default=40, show_default=True)
@click.option("--stop", multiple=True, help="Stop sequence; repeat for several.")
@click.option("--chat", is_flag=True, help="Send PROMPT as a user chat message (chat template).")
@click.option("--system", help="System message; implies --chat.")
@click.option("--json", "as_json", is_flag=True, help="Print every frame as a JSON line.")
@click.option("--timeout", type=float, help="Give up after this many seconds.")
@click.pass_obj
def run(
    settings: Settings,
    /,
    prompt: str,
    as_json: bool,
    timeout: float | None,
    chat: bool,
    system: str | None,
    **params: Any,
) -> None:
    """Run one PROMPT and stream its tokens to the terminal as they arrive.

    A summary (tokens, first-token latency, tokens/s) follows on stderr. Needs a worker:
    start one with `genq worker`.
    """
    if chat or system:
        messages = [{"role": "system", "content": system}] if system else []
        params["messages"] = [*messages, {"role": "user", "content": prompt}]
    else:
        params["prompt"] = prompt
    params["stop"] = list(params["stop"])
    with Client(settings) as client:
        job = client.submit(**{k: v for k, v in params.items() if v is not None})
        _print_stream(job, as_json, timeout)


def terminal_safe(text: str) -> str:
    return text.translate(_CONTROL)


def _print_stream(
    job: JobHandle, as_json: bool, timeout: float | None, from_id: str | None = None
) -> None:
    out = sys.stdout
    show = terminal_safe if out.isatty() else str
    for frame in job.stream(from_id=from_id, timeout=timeout):
        if as_json:
            out.write(frame.model_dump_json() + "\n")
        elif isinstance(frame, TokenFrame):
            out.write(show(frame.data.text))
        out.flush()
    result = job.result()
    stats = job.stats
    if not as_json:
        out.write("\n")
    first = f"{stats.first_token_s * 1000:.1f} ms" if stats.first_token_s is not None else "-"
    stderr.print(
        f"[dim]{result.usage.completion_tokens} tokens · first token {first} · "
        f"{stats.tokens_per_s:,.0f} tok/s · finish {result.finish_reason} · job {job.job_id}[/]",
        soft_wrap=True,
    )


@cli.command()
@click.argument("job_id")
@click.option(
    "--from-seq",
    metavar="[EPOCH-]SEQ",
    help="Start at this frame (e.g. 12, or 1-3 for the second attempt); default: the start.",
)
@click.option("--json", "as_json", is_flag=True, help="Print every frame as a JSON line.")
@click.option("--timeout", type=float, help="Give up after this many seconds.")
@click.pass_obj
def tail(
    settings: Settings, /, job_id: str, from_seq: str | None, as_json: bool, timeout: float | None
) -> None:
    """Stream JOB_ID's tokens: replay what it has produced, then follow it to the end.

    Works from any process, while the job runs or after it finished, for as long as its
    stream is retained (GENQ_JOB_TTL_S). Attempts resumed on another worker are followed.
    """
    with Client(settings) as client:
        _print_stream(client.job(job_id), as_json, timeout, from_seq)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "-Q",
    "--queues",
    default="cpu",
    show_default=True,
    help="Device-class queues to consume (cpu, gpu).",
)
@click.option(
    "-c",
    "--concurrency",
    type=int,
    default=1,
    show_default=True,
    help="Worker processes; each loads its models once.",
)
@click.option("-l", "--loglevel", default="info", show_default=True)
@click.option("-n", "--hostname", help="Node name (default genq@HOST).")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(
    queues: str, concurrency: int, loglevel: str, hostname: str | None, celery_args: tuple[str, ...]
) -> NoReturn:
    """Start a worker: `celery -A workers.app worker` with genq's defaults.

    Extra arguments go to celery unchanged. The plain celery command works as well.
    """
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.app",
        "worker",
        "-Q",
        queues,
        "-c",
        str(concurrency),
        "-l",
        loglevel,
        "-E",
        "-n",
        hostname or "genq@%h",
        *celery_args,
    ]
    os.execv(sys.executable, argv)


@cli.command()
def relay() -> NoReturn:
    """Start a relay: turns every job's live frames into a replayable Redis Stream,
    checkpoints continuation windows, and resumes jobs whose worker died (lease reaper).

    Run one or two per deployment; two relays never duplicate or double-act.
    """
    os.execv(sys.executable, [sys.executable, "-m", "workers.relay"])


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def models(settings: Settings, /, as_json: bool) -> None:
    """List the models in the registry (GENQ_MODELS_FILE plus the built-in `tiny`)."""
    registry = ModelRegistry.from_settings(settings)
    rows = [
        {"name": name, **registry.get(name).model_dump(mode="json")} for name in registry.names()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("name", "backend", "device", "n_ctx", "path")
    for row in rows:
        table.add_row(row["name"], row["backend"], row["device"], str(row["n_ctx"]), row["path"])
    Console().print(table)


@cli.command("make-tiny-model")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Weights seed.")
def make_tiny_model(path: Path, seed: int) -> None:
    """Write genq's tiny test model (random weights, byte-level vocabulary) to PATH.

    The same seed always gives the same bytes. The text it generates is nonsense; it exists
    so that tests and demos run real loading, tokenization and sampling anywhere.
    """
    written = write_tiny_model(path, seed=seed)
    click.echo(f"wrote {written} ({written.stat().st_size:,} bytes)")


def main() -> None:
    cli(prog_name="genq")
