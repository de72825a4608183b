"""`make demo`: the main job on a laptop. Brings up a local stack (ops/stack: a private
redis-server unless GENQ_REDIS_URL names one, a relay and a worker) in a run directory of its
own, streams a few jobs on the tiny model, then brings it down, also on Ctrl-C. The tiny model
has random weights: its text is nonsense, its streaming real.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from types import FrameType as StackFrame

from rich.console import Console
from rich.markup import escape

from common.frames import TokenFrame, WindowFrame
from common.settings import Settings
from ops.localstack import StackError, settings_for
from ops.stackctl import StackOptions, UpResult, down, shared_env, up
from ops.stackstate import RunDir
from producer import AsyncClient, Client, GenqError, JobHandle
from producer.cli import terminal_safe

console = Console(highlight=False)


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    run_dir = Path(tempfile.mkdtemp(prefix="genq-demo-"))
    try:
        with ExitStack() as stack:
            settings = _start_stack(stack, run_dir)
            _run_jobs(settings)
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted: stopped the stack[/]")
        return 130
    except (StackError, GenqError) as exc:
        console.print(f"[red]demo failed:[/] {exc}")
        return 1
    console.print(f"\n[green]demo finished[/]; logs in {run_dir}")
    return 0


def _interrupt(signum: int, frame: StackFrame | None) -> None:
    raise KeyboardInterrupt


def _start_stack(stack: ExitStack, run_dir: Path) -> Settings:
    """The local stack (ops/stack) in the demo's own run directory, so that it never meets a
    stack of the user's; brought down on the way out, Ctrl-C and failures included."""
    env = {"GENQ_CACHE_DIR": os.environ.get("GENQ_CACHE_DIR", str(run_dir / "cache"))}
    run = RunDir(run_dir)
    started = up(
        run,
        StackOptions(workers=1, env=env),
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
    return settings


def _down(run: RunDir, started: UpResult) -> None:
    """Bring the stack down and keep only the logs: the demo's Redis data (the local stack's
    Redis persists) and model cache would otherwise pile up in /tmp, one set per run."""
    down(run)
    started.reap()
    for kept in (run.path / "redis", run.path / "cache"):
        shutil.rmtree(kept, ignore_errors=True)


def _run_jobs(settings: Settings) -> None:
    with Client(settings) as client:
        _show("a plain prompt", client.submit("Once upon a time", max_tokens=120, seed=7))
        _show(
            "a chat, rendered with the model's chat template",
            client.submit(
                messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=80
            ),
        )
        _show(
            "1,000 tokens, four times the tiny model's context, in continuation windows",
            client.submit("Go on", max_tokens=1000, window_tokens=200, ignore_eos=True),
        )
        _show(
            "a stop sequence ('e') ends the text before it",
            client.submit("Stop at the first e", max_tokens=200, stop=["e"], ignore_eos=True),
        )
    asyncio.run(_parallel(settings))
    _batch(settings)


def _show(title: str, job: JobHandle) -> None:
    console.rule(f"[bold]{title}")
    windows = 0
    for frame in job.stream(timeout=60):
        if isinstance(frame, TokenFrame):
            sys.stdout.write(terminal_safe(frame.data.text))
            sys.stdout.flush()
        windows += isinstance(frame, WindowFrame)
    result, stats = job.result(), job.stats
    first = f"{stats.first_token_s * 1000:.1f} ms" if stats.first_token_s is not None else "-"
    console.print(
        f"\n[dim]{result.usage.completion_tokens} tokens · first token {first} · "
        f"{stats.chunks} chunks · {windows} window{'s' * (windows != 1)} · "
        f"finish {result.finish_reason}[/]"
    )


async def _parallel(settings: Settings) -> None:
    console.rule("[bold]three streams at once (AsyncClient + asyncio.gather)")
    async with AsyncClient(settings) as client:
        jobs = [await client.submit(f"Stream {n}", max_tokens=60, seed=n) for n in range(3)]
        results = await asyncio.gather(*(job.result(timeout=60) for job in jobs))
    for job, result in zip(jobs, results, strict=True):
        console.print(
            f"job {job.job_id[:8]}…  {result.usage.completion_tokens:3d} tokens  "
            f"finish {result.finish_reason:6s}  {terminal_safe(result.text[:40])!r}"
        )


def _batch(settings: Settings) -> None:
    console.rule("[bold]a batch of 200 jobs (genq and OpenAI lines), then one cancelled early")
    lines: list[dict[str, object]] = [
        {"custom_id": f"story-{n}", "prompt": f"Story {n}", "max_tokens": 24, "seed": n}
        for n in range(100)
    ]
    lines += [
        {
            "custom_id": f"chat-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "tiny", "messages": [{"role": "user", "content": f"Hi {n}"}]},
        }
        for n in range(100)
    ]
    with Client(settings) as client:
        batch = client.submit_batch(lines, defaults={"max_tokens": 24})
        status = batch.wait(timeout=120)
        first = next(batch.results())
        console.print(
            f"batch {batch.batch_id}: {status.succeeded}/{status.total} succeeded, "
            f"{status.tokens:,} tokens; first result {first.custom_id}: "
            f"{terminal_safe(first.text[:30])!r}"
        )
        job = client.submit("Cut short", max_tokens=100_000, ignore_eos=True)
        chunks = iter(range(3))
        for _ in job.stream(timeout=60, on_chunk=lambda _f: next(chunks, None) is None):
            pass
        result = job.result()
        console.print(
            f"stopped by its stream callback after {result.usage.completion_tokens} tokens: "
            f"finish {result.finish_reason}"
        )


if __name__ == "__main__":
    sys.exit(main())
