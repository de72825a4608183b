"""The `genq` command line. Every command reads its settings from GENQ_* environment
variables (see `common/settings.py`); `--redis-url` overrides GENQ_REDIS_URL."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NoReturn

import click
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from common.errors import GenqError, InvalidJob, RegistryError
from common.frames import TokenFrame
from common.keys import is_job_id
from common.presence import waiting_reason
from common.registry import AnyModelConfig, ModelRegistry, RemoteModelConfig, chat_rendering
from common.routing import queue_name, serving
from common.schemas import (
    DEFAULT_PRIORITY,
    LOGPROBS_MAX,
    PRIORITY_MAX,
    PRIORITY_MIN,
    BatchStatus,
    JobRecord,
    JobSpec,
)
from common.settings import Settings, redact_url
from common.tinymodel import write_tiny_model
from producer.batches import BatchHandle
from producer.client import Client, JobHandle
from producer.core import describe_validation
from producer.progress import BatchProgress

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


def _default(field: str) -> object:
    """A job field's default, for help texts."""
    return JobSpec.model_fields[field].default


def _seconds(duration: str | None) -> float | None:
    return parse_duration(duration) if duration else None


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
@click.option(
    "--min-p",
    type=float,
    help="Drop tokens less likely than this fraction of the most likely one "
    f"[default: {_default('min_p')}].",
)
@click.option(
    "--repeat-penalty",
    type=float,
    help=f"Penalty on repeated tokens; 1.0 disables it [default: {_default('repeat_penalty')}].",
)
@click.option("--stop", multiple=True, help="Stop sequence; repeat for several.")
@click.option("--ignore-eos", is_flag=True, help="Keep generating past end-of-sequence.")
@click.option(
    "--window-tokens",
    type=int,
    help="Tokens per continuation window, a checkpoint after each [default: half the context "
    "left after the prompt].",
)
@click.option("--max-windows", type=int, help="Windows at most [default: what --max-tokens needs].")
@click.option(
    "--logprobs",
    type=int,
    metavar="N",
    help=f"Each token's log probability and its N (0-{LOGPROBS_MAX}) most likely "
    "alternatives, in the frames (see --json) and the result.",
)
@click.option(
    "--priority",
    type=click.IntRange(PRIORITY_MIN, PRIORITY_MAX),
    default=DEFAULT_PRIORITY,
    show_default=True,
    help="0-9; a job of higher priority is started before waiting jobs of lower priority.",
)
@click.option(
    "--expires-in",
    metavar="DURATION",
    callback=lambda _ctx, _param, value: _seconds(value),
    help="Not started within this (90s, 15m, 2h, 1d): the job ends as `expired` without running.",
)
@click.option(
    "--chat",
    is_flag=True,
    help="Send PROMPT as a user chat message (the model's chat template, or a transcript).",
)
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

    A summary (tokens, first-token latency, tokens/s) follows on stderr. Needs a worker that
    serves the model: start one with `genq worker`; until one runs, the job waits (and this
    says so on stderr).
    """
    if chat or system:
        messages = [{"role": "system", "content": system}] if system else []
        params["messages"] = [*messages, {"role": "user", "content": prompt}]
    else:
        params["prompt"] = prompt
    params["stop"] = list(params["stop"])
    with Client(settings) as client:
        job = client.submit(**{k: v for k, v in params.items() if v is not None})
        _warn_if_waiting(client, job.job_id)
        _print_stream(job, as_json, timeout)


def _warn_if_waiting(client: Client, job_id: str) -> None:
    """A job that no running worker serves would wait silently: say why, and what to start."""
    record = JobRecord.from_hash(client.redis.hgetall(client.keys.job(job_id)))
    waiting = waiting_reason(record, client.workers())
    if waiting:
        stderr.print(f"[yellow]waiting: {escape(waiting)}[/]", soft_wrap=True)


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
    "--models",
    envvar="GENQ_WORKER_MODELS",
    metavar="A,B",
    help="Models to serve, comma-separated [env GENQ_WORKER_MODELS; default: every registry "
    "model of --device].",
)
@click.option(
    "--device",
    envvar="GENQ_DEVICE",
    type=click.Choice(["cpu", "gpu"]),
    default="cpu",
    show_default=True,
    help="Device class to serve [env GENQ_DEVICE]; gpu needs a CUDA build of llama-cpp-python.",
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
    models: str | None,
    device: str,
    concurrency: int,
    loglevel: str,
    hostname: str | None,
    celery_args: tuple[str, ...],
) -> NoReturn:
    """Start a worker: `celery -A workers.app worker` with genq's defaults, consuming the
    queues of the models it serves (`cpu.tiny`: device class and model).

    Checks first that it can serve them (known models of its device class, model files and
    API keys present, a GPU for --device gpu) and exits with status 2 if not. Extra
    arguments go to celery unchanged. The plain celery command works as well, configured by
    the same GENQ_* variables.
    """
    if any(arg.startswith(("-Q", "--queues")) for arg in celery_args):
        _fail("-Q/--queues is replaced by --models and --device (queues are per model)", EXIT_USAGE)
    if models is not None:
        os.environ["GENQ_WORKER_MODELS"] = models
    os.environ["GENQ_DEVICE"] = device  # so that the worker process serves the same
    settings = Settings()
    try:
        plan = serving(settings, ModelRegistry.from_settings(settings))
    except RegistryError as exc:
        _fail(str(exc), EXIT_USAGE)
    _exec_celery(
        "worker",
        "-Q",
        ",".join(plan.queues),
        "-c",
        str(concurrency),
        "-l",
        loglevel,
        "-E",
        "-n",
        hostname or "genq@%h",
        *celery_args,
    )


def _exec_celery(command: str, *args: str) -> NoReturn:
    """Become `celery -A workers.app COMMAND ARGS` (genq's Celery app)."""
    os.execv(sys.executable, [sys.executable, "-m", "celery", "-A", "workers.app", command, *args])


@cli.command()
def relay() -> NoReturn:
    """Start a relay: turns every job's live frames into a replayable Redis Stream,
    checkpoints continuation windows, and resumes jobs whose worker died (lease reaper).

    Run one or two per deployment; two relays never duplicate or double-act.
    """
    os.execv(sys.executable, [sys.executable, "-m", "workers.relay"])


# The tasks page's columns: args (job id, epoch, model; never the prompt) and result (progress
# while a job runs, its summary after) are what tell genq's tasks apart.
FLOWER_COLUMNS = "name,uuid,state,result,args,received,runtime,worker"


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--port",
    envvar="FLOWER_PORT",
    type=click.IntRange(1, 65535),
    default=5555,
    show_default=True,
    help="HTTP port [env FLOWER_PORT].",
)
@click.option(
    "--address",
    envvar="FLOWER_ADDRESS",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on [env FLOWER_ADDRESS]. Flower can revoke tasks and shut "
    "workers down: give 0.0.0.0 (every interface) only with authentication, e.g. "
    "--basic_auth=user:password.",
)
@click.option(
    "--url-prefix",
    envvar="FLOWER_URL_PREFIX",
    metavar="PATH",
    help="Serve under /PATH/, behind a reverse proxy that forwards that path "
    "[env FLOWER_URL_PREFIX].",
)
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(
    port: int, address: str, url_prefix: str | None, flower_args: tuple[str, ...]
) -> NoReturn:
    """Start Flower, Celery's web dashboard, on genq's workers and tasks: `celery -A
    workers.app flower`, with the Redis of GENQ_REDIS_URL (its password never shown).

    Workers: each one's queues (`cpu.tiny`: device class and model) and, in its Config tab,
    `genq_device` and `genq_models`. Tasks: `genq.generate` (one job) and `genq.generate_bundle`
    (short jobs of a batch); args name the job, epoch and model, never the prompt; a running
    job is in state PROGRESS with its tokens so far as its result (GENQ_PROGRESS_INTERVAL_S on
    the worker), and a finished one shows its summary. Prometheus metrics at /metrics.

    Extra arguments go to Flower unchanged (--basic_auth=user:pw, --max_tasks=N,
    --tasks_columns=..., --persistent=True), and so do its FLOWER_* variables. Its HTTP API
    (/api/...) answers only with authentication, or FLOWER_UNAUTHENTICATED_API=true.
    """
    _exec_celery(
        "flower",
        f"--port={port}",
        f"--address={address}",
        *([] if "FLOWER_TASKS_COLUMNS" in os.environ else [f"--tasks_columns={FLOWER_COLUMNS}"]),
        *([f"--url_prefix={url_prefix.strip('/')}"] if url_prefix else []),
        *flower_args,  # last: Flower takes the last value of an option given twice
    )


@cli.command()
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
    table = Table("name", "backend", "device", "queue", "n_ctx", "chat", "file or server")
    for row in rows:
        where = row.get("path") or row.get("base_url", "")
        if not row["installed"]:
            where = f"not installed: {row['install']}"
        n_ctx = str(row.get("n_ctx") or "server's")
        chat = _CHAT_MARKS.get(row.get("chat"), "server's")
        cells = (row["name"], row["backend"], row["device"], row["queue"], n_ctx, chat, where)
        table.add_row(*(escape(str(cell)) for cell in cells))  # `[gemma]` is not markup
    Console().print(table)


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


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def workers(settings: Settings, /, as_json: bool) -> None:
    """List the running workers: name, device class, models served, last heartbeat.

    A worker records itself when ready and refreshes that every GENQ_HEARTBEAT_INTERVAL_S; one
    that misses three heartbeats (killed, host gone) is no longer listed.
    """
    with Client(settings) as client:
        found = client.workers()
    if as_json:
        click.echo(json.dumps([info.model_dump(mode="json") for info in found], indent=2))
        return
    if not found:
        stderr.print("no running workers: start one with `genq worker`")
        return
    now_ms = time.time_ns() // 10**6
    table = Table("name", "device", "models", "last seen")
    for info in found:
        seen = f"{max(now_ms - info.heartbeat_ms, 0) / 1000:.1f}s ago"
        table.add_row(escape(info.name), info.device, escape(", ".join(info.models)), seen)
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


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_duration(text: str) -> float:
    """`90`, `90s`, `15m`, `2h` or `1d`, in seconds."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match or float(match[1]) <= 0:
        raise click.BadParameter(f"{text!r} is not a duration (e.g. 90s, 15m, 2h, 1d)")
    return float(match[1]) * _UNIT_S[match[2]]


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-m", "--model", help="Model of the lines that name none.")
@click.option("-n", "--max-tokens", type=int, help="max_tokens of the lines that set none.")
@click.option("-t", "--temperature", type=float, help="temperature of the lines that set none.")
@click.option(
    "--priority",
    type=click.IntRange(PRIORITY_MIN, PRIORITY_MAX),
    default=DEFAULT_PRIORITY,
    show_default=True,
    help="0-9; a job of higher priority is started before waiting jobs of lower priority.",
)
@click.option(
    "--batch-id",
    help="Name the batch (default: a new random id). Submitting again with the same id "
    "adds only the custom_ids the batch lacks: never a job twice.",
)
@click.option(
    "--expires-in",
    metavar="DURATION",
    help="Jobs not started within this (90s, 15m, 2h, 1d) end as `expired` without running.",
)
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Submit the valid lines and write the rejected ones to the --rejects file.",
)
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where --skip-invalid writes rejected lines [default: FILE.rejects.jsonl].",
)
@click.option("--wait", is_flag=True, help="Then show progress until every job has ended.")
@click.pass_obj
def submit(
    settings: Settings,
    /,
    file: Path,
    priority: int,
    batch_id: str | None,
    expires_in: str | None,
    skip_invalid: bool,
    rejects: Path | None,
    wait: bool,
    **defaults: Any,
) -> None:
    """Submit a batch: FILE is JSONL, one job a line, each with a unique `custom_id`.

    A line is a genq job ({"custom_id": "a", "prompt": "...", "max_tokens": 64}) or an OpenAI
    batch request ({"custom_id": "b", "method": "POST", "url": "/v1/chat/completions",
    "body": {...}}). Every line is checked first; with any bad line nothing is submitted and
    each is reported with its line number, unless --skip-invalid.

    Prints the batch id on stdout. Then: genq status ID, genq wait ID, genq results ID.
    """
    expires_s = parse_duration(expires_in) if expires_in else None
    fields = {name: value for name, value in defaults.items() if value is not None}
    with Client(settings) as client, BatchProgress(stderr, "submitting", None) as bar:
        batch = client.submit_batch(
            file,
            batch_id=batch_id,
            priority=priority,
            expires_in=expires_s,
            defaults=fields,
            skip_invalid=skip_invalid,
            progress=bar.submitted,
        )
    _report_submission(batch, file, rejects)
    click.echo(batch.batch_id)
    if wait:
        with Client(settings) as client:
            _wait(client.batch(batch.batch_id), None)


def _report_submission(batch: BatchHandle, file: Path, rejects: Path | None) -> None:
    done = batch.submission
    again = f" ({done.existing} already in it)" if done.existing else ""
    stderr.print(
        f"submitted {done.created} jobs to batch {escape(batch.batch_id)}{again}", soft_wrap=True
    )
    if batch.rejects:
        path = rejects or file.with_name(file.name + ".rejects.jsonl")
        path.write_text("".join(r.to_json() + "\n" for r in batch.rejects))
        stderr.print(f"[yellow]{len(batch.rejects)} invalid lines skipped: see {path}[/]")


@cli.command()
@click.argument("job_or_batch_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def status(settings: Settings, /, job_or_batch_id: str, as_json: bool) -> None:
    """Show a job's or a batch's state: for a batch, its jobs counted by state (queued,
    running, succeeded, failed, cancelled, expired) and the tokens generated. A queued job
    that no running worker serves says so (`waiting`), and which worker to start."""
    with Client(settings) as client:
        if is_job_id(job_or_batch_id) and client.redis.exists(client.keys.job(job_or_batch_id)):
            raw = client.redis.hgetall(client.keys.job(job_or_batch_id))
            record = JobRecord.from_hash(raw)
            waiting = waiting_reason(record, client.workers())
            rows = _job_rows(job_or_batch_id, record)
            if waiting:
                rows.insert(2, ("waiting", waiting))
            _show(rows, {**record.model_dump(mode="json"), "waiting": waiting}, as_json)
            return
        batch = client.batch(job_or_batch_id).status()
        _show(_batch_rows(batch), batch.model_dump(mode="json"), as_json)


def _show(rows: list[tuple[str, str]], data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(show_header=False, box=None)
    for name, value in rows:
        table.add_row(f"[bold]{name}[/]", escape(value))
    Console().print(table)


def _when(ms: int) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _job_rows(job_id: str, record: JobRecord) -> list[tuple[str, str]]:
    result = record.result
    rows = [
        ("job", job_id),
        ("state", record.state),
        ("model", f"{record.spec.model} (queue {record.queue}, priority {record.priority})"),
        ("batch", f"{record.batch_id} / {record.custom_id}" if record.batch_id else "-"),
        ("attempts", f"{record.attempts} (epoch {record.epoch}) {record.worker}".rstrip()),
        ("submitted", _when(record.submitted_ms)),
        ("started", _when(record.started_ms)),
        ("finished", _when(record.finished_ms)),
        ("expires", _when(record.expires_ms)),
    ]
    if result is not None:
        rows.append(("tokens", f"{result.usage.completion_tokens} ({result.finish_reason})"))
    if record.error:
        rows.append(("error", f"{record.error_code}: {record.error}"))
    return rows


def _batch_rows(batch: BatchStatus) -> list[tuple[str, str]]:
    counts = ", ".join(
        f"{name} {getattr(batch, name)}"
        for name in ("queued", "running", "succeeded", "failed", "cancelled", "expired")
    )
    return [
        ("batch", batch.batch_id),
        ("state", batch.state),
        ("jobs", f"{batch.ended} of {batch.total} ended: {counts}"),
        ("tokens", f"{batch.tokens:,}"),
        ("priority", str(batch.priority)),
        ("created", _when(batch.created_ms)),
        ("last ended", _when(batch.finished_ms)),
        ("expires", _when(batch.expires_ms)),
    ]


@cli.command()
@click.argument("batch_id")
@click.option("--timeout", type=float, help="Give up after this many seconds (exit 1).")
@click.pass_obj
def wait(settings: Settings, /, batch_id: str, timeout: float | None) -> None:
    """Show a batch's progress (jobs ended of total, tokens/s, ETA) until every job ended.

    Exits 0 when every job succeeded, 1 otherwise (failed, cancelled or expired jobs).
    """
    with Client(settings) as client:
        _wait(client.batch(batch_id), timeout)


def _wait(batch: BatchHandle, timeout: float | None) -> None:
    with BatchProgress(stderr, "generating", None) as bar:
        final = batch.wait(timeout=timeout, progress=bar.update)
    lines = [f"{getattr(final, n)} {n}" for n in ("succeeded", "failed", "cancelled", "expired")]
    stderr.print(f"batch {escape(batch.batch_id)}: {', '.join(lines)}; {final.tokens:,} tokens")
    if final.succeeded != final.total:
        sys.exit(EXIT_FAILED)


@cli.command()
@click.argument("batch_id")
@click.option(
    "-o",
    "--out",
    type=click.File("w"),
    default="-",
    help="Results file (JSONL, one line per job in input order) [default: stdout].",
)
@click.option(
    "--errors",
    type=click.File("w"),
    help="Write the jobs that did not succeed here instead of to --out.",
)
@click.option("--no-wait", is_flag=True, help="Stop at the first job that has not ended (exit 1).")
@click.pass_obj
def results(
    settings: Settings, /, batch_id: str, out: IO[str], errors: IO[str] | None, no_wait: bool
) -> None:
    """Write a batch's results in input order: custom_id, job_id, status, text, finish_reason,
    usage, error. Lines are written as their jobs end, so this can run while the batch runs.

    Results are kept for GENQ_JOB_TTL_S after each job ends (default one day).
    """
    with Client(settings) as client:
        batch = client.batch(batch_id)
        total = batch.status().total
        written = 0
        with BatchProgress(stderr, "results", total) as bar:
            for line in batch.results(wait=not no_wait):
                ok = line.status == "succeeded"
                target = out if ok or errors is None else errors
                target.write(line.model_dump_json() + "\n")
                target.flush()
                written += 1
                bar.advance(written)
    if written < total:
        _fail(f"batch {batch_id}: {total - written} jobs have not ended yet", EXIT_FAILED)


@cli.command()
@click.argument("job_or_batch_id")
@click.pass_obj
def cancel(settings: Settings, /, job_or_batch_id: str) -> None:
    """Cancel a job or every job of a batch. Queued jobs never start; running jobs stop within
    one chunk and keep their partial text (finish reason `cancelled`); ended jobs keep their
    results."""
    with Client(settings) as client:
        report = client.cancel(job_or_batch_id)
    stderr.print(
        f"cancelled {job_or_batch_id}: {report.not_started} not started, "
        f"{report.signalled} running told to stop, {report.already_ended} already ended",
        soft_wrap=True,
    )


def main() -> None:
    cli(prog_name="genq")
