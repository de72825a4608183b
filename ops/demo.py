"""`make demo`: the main job on a laptop. Brings up a local stack (ops/stack: a private
redis-server unless GENQ_REDIS_URL names one, a relay and two workers) in a run directory of
its own, streams jobs on a real model (`gemma-3-270m`, extra `genq[gemma]`), then brings it
down, also on Ctrl-C: a plain prompt, a chat, a long job in continuation windows, a batch,
an early stop, and the headline: a worker SIGKILLed mid-stream while the stream goes on, on
the other worker, to the text an uninterrupted run gives (checked, not claimed).

`python -m ops.demo --model tiny` runs the same on genq's tiny random model: fast, nonsense.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType as StackFrame
from typing import Any

from rich.console import Console
from rich.markup import escape

from genq import STOP, Client, GenqError, JobHandle
from genq.common import gemma
from genq.common.errors import UnknownModel
from genq.common.frames import ContinuationFrame, Frame, ResumeFrame, TokenFrame
from genq.common.registry import ModelRegistry
from genq.common.settings import Settings
from genq.common.store import jobs, run
from genq.producer.cli import terminal_safe
from genq.producer.progress import BatchProgress
from ops.localstack import StackError, Worker, settings_for
from ops.stackctl import StackOptions, UpResult, down, shared_env, up
from ops.stackstate import RunDir

DEFAULT_MODEL = gemma.NAME
TINY = "tiny"
WORKERS = 2  # the headline needs a second worker to resume on
LEASE_TTL_S = 3  # the demo's stack only (genq's default is 30 s): a killed job resumes soon
TIMEOUT_S = 180.0  # any one job or batch, on a slow machine
console = Console(highlight=False)


class DemoFailed(RuntimeError):
    """What the demo claims did not hold (the resumed text differs, the kill came too late)."""


@dataclass(frozen=True)
class Sizes:
    """Job sizes: a real model streams tens of tokens a second, the tiny one thousands."""

    long_tokens: int
    long_window: int
    batch_jobs: int
    batch_tokens: int
    stop_chunks: int  # the early stop's cap, for a model that never writes its word
    failover_tokens: int
    failover_window: int

    @property
    def kill_after(self) -> int:
        """Epoch-0 tokens the reader sees before the kill: halfway through the third window."""
        return int(2.5 * self.failover_window)


REAL = Sizes(180, 60, 16, 16, 40, 160, 40)
TINY_SIZES = Sizes(1000, 200, 200, 24, 3, 4000, 100)

# The batch: short factual starts that a base model completes in plain English.
FACTS = (
    "The capital of Italy is",
    "Water boils at a temperature of",
    "The largest planet in the solar system is",
    "Monday, Tuesday, Wednesday,",
    "The author of Romeo and Juliet is",
    "The chemical symbol for gold is",
    "The first man to walk on the Moon was",
    "One, two, three, four,",
)
FAILOVER_PROMPT = "The history of the bicycle begins in"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    run_dir = Path(tempfile.mkdtemp(prefix="genq-demo-"))
    sizes = TINY_SIZES if args.model == TINY else REAL
    began = time.monotonic()
    try:
        _prepare_model(args.model)
        with ExitStack() as stack:
            settings, started = _start_stack(stack, run_dir)
            _run_jobs(settings, started, args.model, sizes)
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted: stopped the stack[/]")
        return 130
    except UnknownModel as exc:
        console.print(f"[red]demo failed:[/] {escape(str(exc))}")
        console.print(f"(`make demo` installs {DEFAULT_MODEL}; `--model {TINY}` needs nothing)")
        return 1
    except (StackError, GenqError, DemoFailed) as exc:
        console.print(f"[red]demo failed:[/] {escape(str(exc))}")
        return 1
    took = time.monotonic() - began
    console.print(f"\n[green]demo finished[/] in {took:.0f} s; logs in {run_dir}")
    return 0


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ops.demo", description=__doc__)
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"registry model to run the jobs on ({DEFAULT_MODEL}; {TINY}: fast, nonsense)",
    )
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: StackFrame | None) -> None:
    raise KeyboardInterrupt


def _prepare_model(model: str) -> None:
    """Resolve the model here, before the workers start: an unknown or uninstalled model is
    refused with its message, and a model file written on first use (the tiny model, the
    assembled GGUF) is ready when both workers load it."""
    registry = ModelRegistry.from_settings(Settings())
    registry.get(model)  # UnknownModel, naming the known ones
    began = time.monotonic()
    console.print(f"[dim]model {model}: preparing its file (written on first use) ...[/]")
    path = registry.local_path(model)
    if not path.is_file():
        raise StackError(f"model {model!r}: its file {path} does not exist")
    size = path.stat().st_size / 1e6
    console.print(
        f"[dim]model {model}: {path} ({size:,.0f} MB, {time.monotonic() - began:.1f} s)[/]"
    )


def _start_stack(stack: ExitStack, run_dir: Path) -> tuple[Settings, UpResult]:
    """The local stack (ops/stack) in the demo's own run directory, so that it never meets a
    stack of the user's; brought down on the way out, Ctrl-C and failures included. Models
    are cached where genq caches them (GENQ_CACHE_DIR), so the next run reuses them."""
    env = {
        "GENQ_LEASE_TTL_S": str(LEASE_TTL_S),
        # Two workers of 2 threads may share fewer cores: OpenMP's spinning idle threads
        # would then wait on peers that are not running (measured: jobs 5-10x slower).
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "passive"),
    }
    run = RunDir(run_dir)
    started = up(
        run,
        StackOptions(workers=WORKERS, env=env),
        say=lambda line: console.print(f"[dim]{escape(line)}[/]"),
    )
    stack.callback(_down, run, started)
    settings = settings_for(shared_env(started.state, env))
    with Client(settings) as client:
        for info in client.workers():  # what `genq workers` lists
            console.print(
                f"[dim]worker {info.name} serves {', '.join(info.models)} on {info.device} "
                f"(queues {', '.join(info.queues)})[/]"
            )
    return settings, started


def _down(run: RunDir, started: UpResult) -> None:
    """Bring the stack down and keep only the logs: the demo's Redis data (the local stack's
    Redis persists) would otherwise pile up in /tmp, one set per run."""
    down(run)
    started.reap()
    shutil.rmtree(run.path / "redis", ignore_errors=True)


def _run_jobs(settings: Settings, started: UpResult, model: str, sizes: Sizes) -> None:
    with Client(settings) as client:
        _show(
            "a plain prompt (sampled: temperature 0.7, seed 7)",
            client.submit(
                "Once upon a time, in a small village by the sea,",
                model=model,
                max_tokens=48,
                temperature=0.7,
                seed=7,
            ),
        )
        _show(
            "a chat: one user message, the model's answer (greedy)",
            client.submit(
                messages=[{"role": "user", "content": "What is the capital of France?"}],
                model=model,
                max_tokens=40,
                temperature=0.0,
            ),
        )
        _long_job(client, model, sizes)
        _batch(client, model, sizes)
        _early_stop(client, model, sizes)
        _failover(client, started, model, sizes)


def _show(title: str, job: JobHandle, marks: bool = False) -> None:
    """Stream a job's text as it comes; with `marks`, where each continuation window starts."""
    console.rule(f"[bold]{escape(title)}")
    windows = 0
    for frame in job.stream(timeout=TIMEOUT_S):
        if isinstance(frame, TokenFrame):
            _write(frame.data.text)
        elif isinstance(frame, ContinuationFrame):
            windows += 1
            if marks and frame.data.window:
                console.print(f"[dim cyan]⟨window {frame.data.window + 1}⟩[/]", end="")
    result, stats = job.result(), job.stats
    first = f"{stats.first_token_s * 1000:.0f} ms" if stats.first_token_s is not None else "-"
    console.print(
        f"\n[dim]{result.usage.completion_tokens} tokens · first token {first} · "
        f"{stats.tokens_per_s:.0f} tok/s · {stats.chunks} chunks · {windows} "
        f"window{'s' * (windows != 1)} · finish {result.finish_reason}[/]"
    )


def _write(text: str) -> None:
    sys.stdout.write(terminal_safe(text))
    sys.stdout.flush()


def _long_job(client: Client, model: str, sizes: Sizes) -> None:
    windows = sizes.long_tokens // sizes.long_window
    job = client.submit(
        "Here is a short history of the city of Paris.\n\n",
        model=model,
        max_tokens=sizes.long_tokens,
        window_tokens=sizes.long_window,
        temperature=0.7,
        repeat_penalty=1.2,
        seed=3,
        ignore_eos=True,
    )
    _show(
        f"{sizes.long_tokens} tokens in {windows} continuation windows of {sizes.long_window}: "
        "each a fresh evaluation of the prompt and the text so far",
        job,
        marks=True,
    )


def _batch(client: Client, model: str, sizes: Sizes) -> None:
    """Half genq lines, half OpenAI batch lines, as `genq submit` reads them from JSONL."""
    console.rule(
        f"[bold]a batch of {sizes.batch_jobs} jobs (genq and OpenAI lines) on {WORKERS} workers"
    )
    lines = [_batch_line(n, model, sizes.batch_tokens) for n in range(sizes.batch_jobs)]
    batch = client.submit_batch(
        lines, defaults={"max_tokens": sizes.batch_tokens, "temperature": 0}
    )
    began = time.monotonic()
    with BatchProgress(console, "generating", len(lines)) as bar:
        status = batch.wait(timeout=TIMEOUT_S, progress=bar.update)
    elapsed = time.monotonic() - began
    console.print(
        f"batch {batch.batch_id}: {status.succeeded}/{status.total} succeeded, "
        f"{status.tokens:,} tokens in {elapsed:.1f} s; the first results, in input order:"
    )
    for line in list(batch.results())[:4]:
        prompt = FACTS[int(line.custom_id.rpartition("-")[2]) % len(FACTS)]
        text = terminal_safe(line.text).replace("\n", " ↵ ")
        console.print(f"  {line.custom_id:8s} {escape(prompt)}[bold]{escape(text)}[/]")


def _batch_line(n: int, model: str, tokens: int) -> dict[str, Any]:
    prompt = FACTS[n % len(FACTS)]
    if n % 2 == 0:
        return {"custom_id": f"genq-{n}", "model": model, "prompt": prompt, "seed": n}
    body = {"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0}
    return {"custom_id": f"openai-{n}", "method": "POST", "url": "/v1/completions", "body": body}


def _early_stop(client: Client, model: str, sizes: Sizes) -> None:
    """The reader cancels the job from its stream callback once the text says 'ten'."""
    job = client.submit(
        "Counting to twenty: one, two, three,",
        model=model,
        max_tokens=100_000,
        temperature=0.0,
        ignore_eos=True,
    )
    chunks = iter(range(sizes.stop_chunks))

    def stop_at_ten(_frame: Frame) -> object:
        return STOP if " ten" in job.text or next(chunks, None) is None else None

    console.rule("[bold]an early stop: the reader cancels a 100,000-token job once it says 'ten'")
    for frame in job.stream(timeout=TIMEOUT_S, on_chunk=stop_at_ten):
        if isinstance(frame, TokenFrame):
            _write(frame.data.text)
    result = job.result()
    console.print(
        f"\n[dim]stopped by its stream callback after {result.usage.completion_tokens} tokens: "
        f"finish {result.finish_reason}[/]"
    )


@dataclass
class _Watch:
    """What the reader of the killed job saw: the kill, the resume, the text it printed."""

    kill_after: int
    epoch0_tokens: int = 0
    killed: str = ""  # the killed worker's node name
    killed_at: float = 0.0
    resumed: ResumeFrame | None = None
    resumed_at: float = 0.0


def _failover(client: Client, started: UpResult, model: str, sizes: Sizes) -> None:
    """The same greedy job twice: once undisturbed for reference, then streamed while its
    worker is SIGKILLed mid-window; the stream goes on from the other worker, and its final
    text must equal the reference's."""
    fields: dict[str, Any] = {
        "model": model,
        "max_tokens": sizes.failover_tokens,
        "window_tokens": sizes.failover_window,
        "temperature": 0.0,
        "repeat_penalty": 1.3,  # greedy decoding of a small base model loops without it
        "seed": 11,
        "ignore_eos": True,
    }
    console.rule("[bold]the headline: a worker SIGKILLed mid-stream; the stream goes on")
    console.print(
        f"[dim]{sizes.failover_tokens} greedy tokens (temperature 0, repeat penalty 1.3) in "
        f"windows of {sizes.failover_window} (each window checkpointed by the relay). "
        f"First the job runs undisturbed, for "
        f"reference; then again, streamed, and its worker is SIGKILLed after "
        f"{sizes.kill_after} tokens. Its lease ({LEASE_TTL_S} s here) lapses, the relay "
        f"requeues the job, and the other worker resumes it from the last checkpoint.[/]"
    )
    began = time.monotonic()
    reference = client.submit(FAILOVER_PROMPT, **fields).result(timeout=TIMEOUT_S)
    took = time.monotonic() - began
    console.print(f"[dim]reference run: {len(reference.text)} characters in {took:.1f} s[/]")
    job = client.submit(FAILOVER_PROMPT, **fields)
    watch = _Watch(sizes.kill_after)
    _write(FAILOVER_PROMPT)
    for frame in job.stream(timeout=TIMEOUT_S):
        _follow(frame, watch, client, job, started)
    _verdict(watch, job, reference.text, client, sizes)


def _follow(frame: Frame, watch: _Watch, client: Client, job: JobHandle, started: UpResult) -> None:
    if isinstance(frame, TokenFrame):
        _write(frame.data.text)
        if frame.epoch == 0:
            watch.epoch0_tokens += len(frame.data.token_ids)
            if not watch.killed and watch.epoch0_tokens >= watch.kill_after:
                _kill(watch, client, job, started)
    elif isinstance(frame, ResumeFrame) and watch.resumed is None:
        watch.resumed, watch.resumed_at = frame, time.monotonic()
        _resumed(watch, job)


def _kill(watch: _Watch, client: Client, job: JobHandle, started: UpResult) -> None:
    node = _holder(client, job.job_id)
    worker = next(
        p for p in started.procs if isinstance(p, Worker) and node.startswith(f"{p.name}@")
    )
    worker.signal(signal.SIGKILL)
    watch.killed, watch.killed_at = node, time.monotonic()
    pid = worker.proc.pid if worker.proc is not None else 0
    worker.stop()  # collects its exit status: it has gone
    console.print(
        f"\n[bold red]✂ SIGKILL {node} (pid {pid} and its pool) after "
        f"{watch.epoch0_tokens} tokens[/][dim]: the stream waits for the lease to lapse ...[/]"
    )


def _resumed(watch: _Watch, job: JobHandle) -> None:
    assert watch.resumed is not None
    data = watch.resumed.data
    committed = job.text[: data.committed_chars]
    console.print(
        f"[bold green]↻ resumed {watch.resumed_at - watch.killed_at:.1f} s after the kill, "
        f"from window {data.from_window + 1} ({data.committed_tokens} tokens checkpointed); "
        f"the text after it is generated again:[/]"
    )
    _write(f"…{committed[-60:]}")


def _verdict(watch: _Watch, job: JobHandle, expected: str, client: Client, sizes: Sizes) -> None:
    result = job.result()
    if not watch.killed or watch.resumed is None:
        raise DemoFailed(
            f"job {job.job_id} ended before the kill or without a resume "
            f"(killed: {watch.killed or 'no'}; resumed: {watch.resumed is not None})"
        )
    resumed_on = _holder(client, job.job_id)
    recomputed = watch.epoch0_tokens - watch.resumed.data.committed_tokens
    console.print(
        f"\n[dim]{result.usage.completion_tokens} tokens · finish {result.finish_reason} · "
        f"killed on {watch.killed}, finished on {resumed_on} · {recomputed} tokens computed "
        f"twice (at most one window: {sizes.failover_window})[/]"
    )
    if result.text != expected or job.text != expected:
        raise DemoFailed(
            f"the resumed job's text differs from the uninterrupted run's "
            f"({len(result.text)} vs {len(expected)} characters): see job {job.job_id}"
        )
    console.print(
        f"[bold green]✓ identical[/] to the uninterrupted run: all {len(expected)} characters, "
        "as if no worker had died"
    )


def _holder(client: Client, job_id: str) -> str:
    """The node name of the worker running (or that ran) the job: `worker1@host`."""
    record = run(client.redis, jobs.read(client.keys, job_id))
    return record.worker if record is not None else ""


if __name__ == "__main__":
    sys.exit(main())
