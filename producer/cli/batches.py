"""Batch commands: `genq submit` (a JSONL file of jobs), `genq wait` (progress until every
job ended) and `genq results` (the results in input order). `genq status` and `genq cancel`,
which take a job or a batch id, are in producer/cli/jobs.py."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Any

import click
from rich.markup import escape

from genq.common.connection import check_primary
from genq.common.settings import Settings
from genq.producer.batches import BatchHandle
from genq.producer.cli.options import parse_duration, priority_option, tenant_option
from genq.producer.cli.output import EXIT_FAILED, fail, note, stderr_console
from genq.producer.client import Client
from genq.producer.handles import JobHandle
from genq.producer.progress import BatchProgress


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-m", "--model", help="Model of the lines that name none.")
@click.option("-n", "--max-tokens", type=int, help="max_tokens of the lines that set none.")
@click.option("-t", "--temperature", type=float, help="temperature of the lines that set none.")
@priority_option
@tenant_option
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
    tenant: str,
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
    check_primary(settings)
    with Client(settings) as client, BatchProgress(stderr_console(), "submitting", None) as bar:
        batch = client.submit_batch(
            file,
            batch_id=batch_id,
            priority=priority,
            tenant=tenant,
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


def _report_submission(batch: BatchHandle[JobHandle], file: Path, rejects: Path | None) -> None:
    done = batch.submission
    again = f" ({done.existing} already in it)" if done.existing else ""
    note(f"submitted {done.created} jobs to batch {escape(batch.batch_id)}{again}")
    if batch.rejects:
        path = rejects or file.with_name(file.name + ".rejects.jsonl")
        path.write_text("".join(r.to_json() + "\n" for r in batch.rejects))
        note(f"[yellow]{len(batch.rejects)} invalid lines skipped: see {path}[/]", soft_wrap=False)


@click.command()
@click.argument("batch_id")
@click.option("--timeout", type=float, help="Give up after this many seconds (exit 1).")
@click.pass_obj
def wait(settings: Settings, /, batch_id: str, timeout: float | None) -> None:
    """Show a batch's progress (jobs ended of total, tokens/s, ETA) until every job ended.

    Exits 0 when every job succeeded, 1 otherwise (failed, cancelled or expired jobs).
    """
    with Client(settings) as client:
        _wait(client.batch(batch_id), timeout)


def _wait(batch: BatchHandle[JobHandle], timeout: float | None) -> None:
    with BatchProgress(stderr_console(), "generating", None) as bar:
        final = batch.wait(timeout=timeout, progress=bar.update)
    lines = [f"{getattr(final, n)} {n}" for n in ("succeeded", "failed", "cancelled", "expired")]
    note(
        f"batch {escape(batch.batch_id)}: {', '.join(lines)}; {final.tokens:,} tokens",
        soft_wrap=False,
    )
    if final.succeeded != final.total:
        sys.exit(EXIT_FAILED)


@click.command()
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
        with BatchProgress(stderr_console(), "results", total) as bar:
            for line in batch.results(wait=not no_wait):
                ok = line.status == "succeeded"
                target = out if ok or errors is None else errors
                target.write(line.model_dump_json() + "\n")
                target.flush()
                written += 1
                bar.advance(written)
    if written < total:
        fail(f"batch {batch_id}: {total - written} jobs have not ended yet", EXIT_FAILED)
