"""Job commands: `genq run` (submit one prompt and print its text), `genq tail` (replay and
follow a job), `genq status` (a job's or a batch's state) and `genq cancel` (a job or a
batch). They use only the public client API (`genq.producer.Client`)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import IO, Any

import click
from rich.markup import escape

from genq.common.connection import check_primary
from genq.common.errors import InvalidJob
from genq.common.ids import check_batch_id, is_job_id
from genq.common.presence import waiting_reason
from genq.common.schemas import LOGPROBS_MAX, BatchStatus, JobRecord, JobSpec
from genq.common.settings import Settings
from genq.producer.cli.options import priority_option, seconds, tenant_option
from genq.producer.cli.output import note, show, terminal_safe
from genq.producer.client import Client
from genq.producer.core import TextFeed
from genq.producer.handles import JobHandle
from genq.producer.streams import JobStream


def _default(field: str) -> object:
    """A job field's default, for help texts."""
    return JobSpec.model_fields[field].default


@click.command()
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
    "--deterministic/--batched",
    default=None,
    hidden=True,  # kept so that old scripts still run: every local job is deterministic
    help="No effect: every local job is deterministic, batched or not.",
)
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
@priority_option
@tenant_option
@click.option(
    "--expires-in",
    metavar="DURATION",
    callback=lambda _ctx, _param, value: seconds(value),
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
    """Run one PROMPT and print its text as it is generated.

    What is printed is the job's text, also when its worker died and another resumed it, or
    no relay ran for a while. On a terminal text appears as it comes; piped, only text that
    no resumed attempt can take back, so that the output is exactly the result. A summary
    (tokens, first-token latency, tokens/s) follows on stderr. Needs a worker that
    serves the model: start one with `genq worker`; until one runs, the job waits (and this
    says so on stderr).
    """
    if chat or system:
        messages = [{"role": "system", "content": system}] if system else []
        params["messages"] = [*messages, {"role": "user", "content": prompt}]
    else:
        params["prompt"] = prompt
    params["stop"] = list(params["stop"])
    check_primary(settings)
    with Client(settings) as client:
        job = client.submit(**{k: v for k, v in params.items() if v is not None})
        _warn_if_waiting(client, job.job_id)
        _print_stream(job, as_json, timeout)


def _warn_if_waiting(client: Client, job_id: str) -> None:
    """A job that no running worker serves would wait silently: say why, and what to start."""
    waiting = waiting_reason(client.record(job_id), client.workers())
    if waiting:
        note(f"[yellow]waiting: {escape(waiting)}[/]")


def _print_stream(
    job: JobHandle, as_json: bool, timeout: float | None, from_id: str | None = None
) -> None:
    """The job's frames (--json), or its text: the stream's text as it settles, so that what
    is printed is the job's final text (resumes, holes and skipped entries included). On a
    terminal, text is printed as it comes; piped, only text no resumed attempt can take
    back, so that the output is exactly the result."""
    out = sys.stdout
    tty = out.isatty()
    feed = TextFeed()
    stream = job.stream(from_id=from_id, timeout=timeout)
    for frame in stream:
        if as_json:
            out.write(frame.model_dump_json() + "\n")
        else:
            _write_text(out, feed, stream, tty, job.job_id)
        out.flush()
    job.result()  # JobFailed for a job that failed
    if tty and not as_json:
        out.write("\n")
    _summary(job)


def _write_text(out: IO[str], feed: TextFeed, stream: JobStream, tty: bool, job_id: str) -> None:
    new = feed.follow(stream.state, eager=tty)
    out.write(terminal_safe(new) if tty else new)
    if feed.diverged_at is not None:
        note(
            f"[yellow]genq: job {job_id} resumed, and its new attempt's text differs from what "
            f"was printed: the last {feed.stale} characters printed were the earlier "
            f"attempt's; the new attempt's text from character {feed.diverged_at} follows[/]"
        )


def _summary(job: JobHandle) -> None:
    result, stats = job.result(), job.stats

    first = f"{stats.first_token_s * 1000:.1f} ms" if stats.first_token_s is not None else "-"
    skipped = f" · {stats.skipped} invalid stream entries skipped" if stats.skipped else ""
    note(
        f"[dim]{result.usage.completion_tokens} tokens · first token {first} · "
        f"{stats.tokens_per_s:,.0f} tok/s · finish {result.finish_reason} · "
        f"job {job.job_id}{skipped}[/]"
    )


@click.command()
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
    """Print JOB_ID's text: replay what it has produced, then follow it to the end.

    Works from any process, while the job runs or after it finished, for as long as its
    stream is retained (GENQ_JOB_TTL_S). Prints the job's text as `genq run` does: attempts
    resumed on another worker are followed, and piped output is exactly the result.
    """

    with Client(settings) as client:
        _print_stream(client.job(job_id), as_json, timeout, from_seq)


@click.command()
@click.argument("job_or_batch_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def status(settings: Settings, /, job_or_batch_id: str, as_json: bool) -> None:
    """Show a job's or a batch's state: for a batch, its jobs counted by state (queued,
    running, succeeded, failed, cancelled, expired) and the tokens generated. A queued job
    that no running worker serves says so (`waiting`), and which worker to start.

    A job id is looked up as a job, then as a batch; any other id as a batch. An unknown id
    is reported with what was looked for (exit 2)."""
    with Client(settings) as client:
        record = _find_job(client, job_or_batch_id)
        if record is not None:
            waiting = waiting_reason(record, client.workers())
            rows = _job_rows(job_or_batch_id, record)
            if waiting:
                rows.insert(2, ("waiting", waiting))
            show(rows, {**record.model_dump(mode="json"), "waiting": waiting}, as_json)
            return
        batch = _find_batch(client, job_or_batch_id)
        show(_batch_rows(batch), batch.model_dump(mode="json"), as_json)


def _find_job(client: Client, name: str) -> JobRecord | None:
    """The job's record, when `name` is a job id and the job is kept."""
    if not is_job_id(name):
        return None
    try:
        return client.record(name)
    except InvalidJob:
        return None  # no such job: `name` may name a batch


def _find_batch(client: Client, name: str) -> BatchStatus:
    """The batch's status; the error says what was looked for (a job id may name a batch)."""
    if is_job_id(name):
        missing = f"no job or batch {name}: neither was found"
    else:
        missing = f"no batch {name} (not a job id, so no job was looked for)"
    try:
        check_batch_id(name)
    except InvalidJob:
        raise InvalidJob(
            f"not a job id (32 lowercase hex digits) nor a batch id (1-64 letters, digits, "
            f"'_', '.', '-'): {name!r}"
        ) from None
    try:
        return client.batch(name).status()
    except InvalidJob:
        raise InvalidJob(f"{missing}; never submitted, or its retention has passed") from None


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
        ("tenant", record.tenant),
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
        ("tenant", batch.tenant),
        ("created", _when(batch.created_ms)),
        ("last ended", _when(batch.finished_ms)),
        ("expires", _when(batch.expires_ms)),
    ]


@click.command()
@click.argument("job_or_batch_id")
@click.pass_obj
def cancel(settings: Settings, /, job_or_batch_id: str) -> None:
    """Cancel a job or every job of a batch. Queued jobs never start; running jobs stop within
    one chunk and keep their partial text (finish reason `cancelled`); ended jobs keep their
    results."""
    with Client(settings) as client:
        report = client.cancel(job_or_batch_id)
    note(
        f"cancelled {job_or_batch_id}: {report.not_started} not started, "
        f"{report.signalled} running told to stop, {report.already_ended} already ended"
    )
