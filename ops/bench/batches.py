"""The submit and overhead sections: a batch queued with no worker, and a batch run through
the workers.

submit: a JSONL batch queued with `Client.submit_batch(path)` by a producer process of its own
(`python -m ops.bench.child batch`: its peak RSS is the producer's alone), against
`Client.submit()` once per job in another. No worker runs: the jobs stay queued.

overhead: genq timed from the submit call until `BatchHandle.wait()` returns; the in-process
processes (`python -m ops.bench.child generate`) from the first start to the last end. Model
loading is excluded on both sides; the figure is the median round's ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genq import Client
from ops.bench.child import READY
from ops.bench.report import BENCH_MODEL, alternate, job_model, mb, met, say
from ops.bench.stack import Stack, local_stack, serving
from ops.localstack import StackError

PROCESSES = 2  # worker processes, and baseline processes, unless --overhead-processes
JOBS = 200  # the target's batch, unless --overhead-jobs
TARGET_RATIO = 0.9  # in-process wall over genq wall, at least
PROMPT = "Once upon a time"
FIRST_SEED = 1
POLL_S = 0.05
TIMEOUT_S = 600.0
WARM_JOBS, WARM_ROUNDS = 10, 10  # warm-up batches until every worker has run a job
TARGET_JOBS_PER_S = 2_000.0  # submit_batch's rate, at least
TARGET_PEAK_RSS = 150_000_000  # the producer's, bytes, decimal MB as report.mb prints them
TOKENS = 16  # max_tokens of each submitted job
KIB = 1024


@dataclass(frozen=True)
class Side:
    """One side of a round: its wall seconds (genq's from the submit call; in-process from the
    earliest start to the latest end), jobs and tokens."""

    seconds: float
    jobs: int
    tokens: int = 0
    submit_s: float = 0.0  # genq's submit_batch call alone
    exact: int = 0  # genq's jobs whose usage says exactly the tokens asked for


def batch_lines(
    model: str, jobs: int, tokens: int, first: int = FIRST_SEED, prompt: str = PROMPT
) -> list[dict[str, Any]]:
    """A batch's lines, seeds from `first`, EOS banned; `prompt` may name the line's `{n}`."""
    return [
        {"custom_id": f"s{n}", "prompt": prompt.format(n=n), "model": model, "max_tokens": tokens,
         "seed": first + n, "ignore_eos": True}
        for n in range(jobs)
    ]  # fmt: skip


def measure_baseline(stack: Stack, model: str, jobs: int, tokens: int, processes: int) -> Side:
    """The processes load the model, then start together on a line sent to each."""
    shares = [jobs // processes + (n < jobs % processes) for n in range(processes)]
    with ExitStack() as started:
        children = []
        for n, share in enumerate(shares):
            first = str(FIRST_SEED + sum(shares[:n]))
            args = ["generate", model, first, str(share), str(tokens), PROMPT]
            child = stack.child(args, f"overhead-inprocess-{n}", READY, stdin=True)
            children.append(started.enter_context(serving(child)))
        for child in children:
            child.send("go")
        printed = [child.printed(TIMEOUT_S) for child in children]
    seconds = max(p["end"] for p in printed) - min(p["start"] for p in printed)
    return Side(seconds, sum(p["jobs"] for p in printed), sum(p["tokens"] for p in printed))


def warm_up(client: Client, model: str, tokens: int, processes: int) -> None:
    """Short batches until each worker process has run a job: its model is loaded."""
    for n in range(WARM_ROUNDS):
        handle = client.submit_batch(batch_lines(model, WARM_JOBS, tokens, 10_000 + n * WARM_JOBS))
        handle.wait(timeout=TIMEOUT_S, poll_s=POLL_S)
        if len({client.record(job).worker for job in handle.job_ids()}) >= processes:
            return
    raise StackError(f"not every worker ran a warm-up job in {WARM_ROUNDS} rounds")


def measure_genq(client: Client, model: str, jobs: int, tokens: int) -> Side:
    lines = batch_lines(model, jobs, tokens)  # built before the clock starts, as a file would be
    started = time.perf_counter()
    handle = client.submit_batch(lines)
    submit_s = time.perf_counter() - started
    status = handle.wait(timeout=TIMEOUT_S, poll_s=POLL_S)
    seconds = time.perf_counter() - started
    results = list(handle.results(wait=False))
    exact = sum(1 for r in results if r.usage is not None and r.usage.completion_tokens == tokens)
    return Side(seconds, status.succeeded, submit_s=submit_s, exact=exact)


def overhead(args: argparse.Namespace, cache: Path) -> None:
    """200 jobs of 16 tokens as one batch on 2 worker processes against the same jobs run back
    to back by 2 llama-cpp-python processes, 3 rounds. Target: median in-process wall / genq
    wall >= 0.90."""
    jobs, tokens, processes = args.overhead_jobs, args.overhead_tokens, args.overhead_processes
    model = job_model(args.model)
    say(
        f"{jobs:,} jobs of {tokens} tokens on {model!r} (prompt {PROMPT!r}, seeds "
        f"{FIRST_SEED}..{FIRST_SEED + jobs - 1}, EOS banned, JobSpec's default sampling); "
        f"{processes} processes on each side, OMP_WAIT_POLICY "
        f"{os.environ.get('OMP_WAIT_POLICY', 'spin')}; model loading excluded on both"
    )
    with local_stack(cache, {}, workers=processes) as stack, Client(stack.settings) as client:
        warm_up(client, model, tokens, processes)
        rounds = alternate(
            lambda: measure_baseline(stack, model, jobs, tokens, processes),
            lambda: measure_genq(client, model, jobs, tokens),
            args.overhead_rounds,
        )
        stack.check_alive()
    ratios = [b.seconds / g.seconds for b, g in rounds]
    base, genq = rounds[ratios.index(statistics.median_low(ratios))]
    ratio, ok = base.seconds / genq.seconds, genq.jobs == jobs and genq.exact == jobs
    per_job_ms = (genq.seconds - base.seconds) / jobs * processes * 1000
    say(
        "  rounds (in-process wall / genq wall; even rounds ran genq first): "
        + ", ".join(f"{r:.2f}" for r in ratios),
        "  the median round:",
        f"  in-process, {processes} processes back to back: {base.jobs:,} jobs, "
        f"{base.tokens:,} tokens in {base.seconds:.2f} s = {base.jobs / base.seconds:,.0f} jobs/s",
        f"  genq, one batch on {processes} worker processes: {jobs:,} jobs in "
        f"{genq.seconds:.2f} s = {jobs / genq.seconds:,.0f} jobs/s (submit_batch itself "
        f"{genq.submit_s:.2f} s); succeeded {genq.jobs:,}/{jobs:,}, exactly {tokens} "
        f"tokens {genq.exact:,}/{jobs:,} ({met(ok)})",
        f"  in-process wall / genq wall: {ratio:.2f} (target >= {TARGET_RATIO:.2f}: "
        f"{met(ratio >= TARGET_RATIO)}); overhead per job per process: {per_job_ms:.2f} ms",
    )


def submit(args: argparse.Namespace, cache: Path) -> None:
    """A 10,000-line batch queued with Client.submit_batch() by a producer process, no worker,
    against Client.submit() calls. Targets: >= 2,000 jobs/s; RSS <= 150 MB."""
    jobs, path = args.submit_jobs, cache / "submit-batch.jsonl"
    lines = batch_lines(BENCH_MODEL, jobs, TOKENS, 0, "Story {n}: once upon a time")
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    say(
        f"batch: {jobs:,} lines ({path.stat().st_size / 1e6:.1f} MB of JSONL), {TOKENS} tokens "
        f"each on {BENCH_MODEL!r}; redis-server only, no worker (the jobs stay queued); each "
        "producer is a process of its own"
    )
    with local_stack(cache, {}, workers=0, relay=False) as stack:
        batch = _child(stack, ["batch", str(path)])
        single = _child(stack, ["single", str(path), str(args.submit_single_jobs)])
        with Client(stack.settings) as client:
            total = client.batch(batch["batch_id"]).status().total
    rate, single_rate = batch["jobs"] / batch["seconds"], single["jobs"] / single["seconds"]
    peak, ready = batch["peak_kib"] * KIB, batch["ready_kib"] * KIB
    say(
        f"  Client.submit_batch(path): {batch['jobs']:,} jobs in {batch['seconds']:.2f} s = "
        f"{rate:,.0f} jobs/s (target >= {TARGET_JOBS_PER_S:,.0f}: "
        f"{met(rate >= TARGET_JOBS_PER_S)})",
        f"  Client.submit() one by one: {single['jobs']:,} jobs in {single['seconds']:.2f} s = "
        f"{single_rate:,.0f} jobs/s; batch / single: {rate / single_rate:.1f}x",
        f"  producer RSS: {mb(batch['imports_kib'] * KIB)} after imports, {mb(ready)} with the "
        f"client connected; peak (VmHWM) {mb(peak)} ({mb(peak - ready, sign=True)} for the "
        f"submission; target <= {mb(TARGET_PEAK_RSS)}: {met(peak <= TARGET_PEAK_RSS)}); one by "
        f"one: peak {mb(single['peak_kib'] * KIB)}",
        f"  (ru_maxrss reads {mb(batch['maxrss_kib'] * KIB)}: Linux carries the parent's peak "
        "across fork and exec into it, so it is the benchmark process's, not the producer's)",
        f"  batch status total: {total:,} (expected {jobs:,}: {met(total == jobs)})",
    )


def _child(stack: Stack, args: list[str]) -> dict[str, Any]:
    with serving(stack.child(args, f"submit-{args[0]}")) as child:
        return child.printed(TIMEOUT_S)
