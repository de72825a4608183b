"""Per-job overhead: many short jobs through genq against the same generations run back to
back in plain processes, with as many processes on each side.

genq: one batch of `jobs` jobs (200 of 16 tokens each by default, EOS banned, fixed seeds) on
the benchmark's model, run by 2 worker processes with a relay running, timed from the submit
call until `BatchHandle.wait()` returns. Baseline: 2 processes (ops/bench/overhead_child.py),
each with the model loaded by llama-cpp-python alone, running half the jobs one after
another (`Llama.generate()`), each from a fresh context, timed
from the first one's start to the last one's end (model loading excluded on both sides: the
workers run warm-up jobs first). The job records' timestamps then say where genq's time went.

Both sides run once per round, which goes first alternating by round, and the figure is the
median round's ratio: this machine's speed drifts by tens of percent within a minute, and a
single baseline measured before a single genq run puts all of that drift on the ratio.

Both sides run with OMP_WAIT_POLICY=passive unless told otherwise (`--omp-spin`, in the
environment of the whole run): the OpenMP build's idle threads otherwise spin on cores the
other process needs; with as many processes as cores, jobs take many times longer, by
amounts that vary from run to run, on both sides alike.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from genq import BatchHandle, Client, JobHandle
from ops.bench.overhead_child import READY
from ops.bench.report import job_model, met, say
from ops.bench.stack import BenchProcess, Stack, local_stack, running
from ops.localstack import StackError

PROCESSES = 2  # worker processes, and baseline processes, unless --overhead-processes
JOBS = 200  # the target's batch, unless --overhead-jobs
TARGET_RATIO = 0.9  # in-process wall over genq wall, at least
PROMPT = "Once upon a time"
FIRST_SEED = 1
POLL_S = 0.05
TIMEOUT_S = 600.0
WARM_JOBS = 10  # per round, until every worker has run one (and so loaded the model)
WARM_ROUNDS = 10
POOL_ROLE = "worker pool processes"


@dataclass(frozen=True)
class Baseline:
    seconds: float  # earliest start to latest end over the processes
    spans: list[float]  # each process's own generation span
    cpu_s: float  # CPU time of the processes over their spans
    jobs: int
    tokens: int


@dataclass(frozen=True)
class JobTimes:
    """One job's record timestamps (wall-clock ms, written by producer and worker)."""

    worker: str
    submitted_ms: int
    started_ms: int
    finished_ms: int

    @property
    def run_ms(self) -> int:
        """Claimed until its final record was written: what the worker did for the job."""
        return self.finished_ms - self.started_ms


@dataclass(frozen=True)
class GenqRun:
    seconds: float  # submit call until wait() returned
    submit_s: float  # the submit_batch call alone
    began_ms: float  # wall clock at the submit call
    returned_ms: float  # wall clock when wait() returned
    succeeded: int
    exact: int  # jobs whose usage says exactly the tokens asked for
    times: list[JobTimes]
    cpu_s: dict[str, float]  # CPU time over the run, by role in the stack


def batch_lines(
    model: str, jobs: int, tokens: int, first_seed: int = FIRST_SEED
) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"o{n}",
            "prompt": PROMPT,
            "model": model,
            "max_tokens": tokens,
            "seed": first_seed + n,
            "ignore_eos": True,
        }
        for n in range(jobs)
    ]


def measure_baseline(stack: Stack, model: str, jobs: int, tokens: int, processes: int) -> Baseline:
    """The processes load the model, then start together on a line sent to each."""
    shares = [jobs // processes + (n < jobs % processes) for n in range(processes)]
    firsts = [FIRST_SEED + sum(shares[:n]) for n in range(processes)]
    with ExitStack() as stack_of:
        children = [
            stack_of.enter_context(
                running(_child(stack, model, n, first, share, tokens), READY, True)
            )
            for n, (first, share) in enumerate(zip(firsts, shares, strict=True))
        ]
        for child in children:
            child.stdin.write(b"go\n")
            child.stdin.flush()
        printed = [_printed(child) for child in children]
    return Baseline(
        seconds=max(p["end"] for p in printed) - min(p["start"] for p in printed),
        spans=[p["end"] - p["start"] for p in printed],
        cpu_s=sum(p["cpu"] for p in printed),
        jobs=sum(p["jobs"] for p in printed),
        tokens=sum(p["tokens"] for p in printed),
    )


def _child(stack: Stack, model: str, n: int, first: int, jobs: int, tokens: int) -> BenchProcess:
    args = [model, str(first), str(jobs), str(tokens), PROMPT]
    log = stack.cache / f"overhead-inprocess-{n}.log"
    return BenchProcess("ops.bench.overhead_child", args, log, stack.env)


def _printed(child: BenchProcess) -> dict[str, Any]:
    code = child.wait(TIMEOUT_S)
    output = child.output()
    try:
        printed: dict[str, Any] = json.loads(output.splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        printed = {}
    if code != 0 or not printed:
        raise StackError(f"{child.module} exited with {code}; its output:\n{output[-2000:]}")
    return printed


def warm_up(client: Client, model: str, tokens: int, processes: int) -> None:
    """Short batches until each worker process has run a job: its model is loaded."""
    for round_ in range(WARM_ROUNDS):
        lines = batch_lines(model, WARM_JOBS, tokens, first_seed=10_000 + round_ * WARM_JOBS)
        handle = client.submit_batch(lines)
        handle.wait(timeout=TIMEOUT_S, poll_s=POLL_S)
        if len({t.worker for t in job_times(client, handle)}) >= processes:
            return
    raise StackError(f"not every worker ran a warm-up job in {WARM_ROUNDS} rounds")


def measure_genq(stack: Stack, client: Client, model: str, jobs: int, tokens: int) -> GenqRun:
    lines = batch_lines(model, jobs, tokens)  # built before the clock starts, as a file would be
    roles = stack_processes(stack)
    cpu_before = cpu_seconds(roles)
    began_ms = time.time() * 1000
    started = time.perf_counter()
    handle = client.submit_batch(lines)
    submit_s = time.perf_counter() - started
    status = handle.wait(timeout=TIMEOUT_S, poll_s=POLL_S)
    seconds = time.perf_counter() - started
    returned_ms = time.time() * 1000
    cpu_after = cpu_seconds(roles)
    cpu = {role: cpu_after[role] - cpu_before[role] for role in roles}
    results = list(handle.results(wait=False))
    exact = sum(1 for r in results if r.usage is not None and r.usage.completion_tokens == tokens)
    times = job_times(client, handle)
    return GenqRun(seconds, submit_s, began_ms, returned_ms, status.succeeded, exact, times, cpu)


def stack_processes(stack: Stack) -> dict[str, list[psutil.Process]]:
    """The stack's processes by role; a worker is a Celery main process and its pool."""
    mains = [psutil.Process(w.proc.pid) for w in stack.workers if w.proc is not None]
    others = {"relay": stack.relay, "redis-server": stack.redis}
    roles = {
        POOL_ROLE: [child for main in mains for child in main.children()],
        "Celery main processes": mains,
        "producer (this process)": [psutil.Process()],
    }
    for role, proc in others.items():
        if proc is not None and proc.proc is not None:
            roles[role] = [psutil.Process(proc.proc.pid)]
    return roles


def cpu_seconds(roles: dict[str, list[psutil.Process]]) -> dict[str, float]:
    """User and system CPU time so far, summed by role."""
    return {role: sum(sum(proc.cpu_times()[:2]) for proc in procs) for role, procs in roles.items()}


def job_times(client: Client, handle: BatchHandle[JobHandle]) -> list[JobTimes]:
    records = [client.record(job_id) for job_id in handle.job_ids()]
    return [JobTimes(r.worker, r.submitted_ms, r.started_ms, r.finished_ms) for r in records]


def section(args: argparse.Namespace, cache: Path) -> None:
    jobs, tokens, processes = args.overhead_jobs, args.overhead_tokens, args.overhead_processes
    model = job_model(args.model)
    openmp = os.environ.get("OMP_WAIT_POLICY", "spin")
    say(
        f"{jobs:,} jobs of {tokens} tokens on {model!r} (prompt {PROMPT!r}, seeds "
        f"{FIRST_SEED}..{FIRST_SEED + jobs - 1}, EOS banned, JobSpec's default sampling); "
        f"{processes} processes on each side, OMP_WAIT_POLICY {openmp}; model loading "
        "excluded on both"
    )
    rounds: list[tuple[Baseline, GenqRun]] = []
    with local_stack(cache, {}, workers=processes) as stack, Client(stack.settings) as client:
        warm_up(client, model, tokens, processes)
        for round_ in range(args.overhead_rounds):
            if round_ % 2:
                genq = measure_genq(stack, client, model, jobs, tokens)
                baseline = measure_baseline(stack, model, jobs, tokens, processes)
            else:
                baseline = measure_baseline(stack, model, jobs, tokens, processes)
                genq = measure_genq(stack, client, model, jobs, tokens)
            rounds.append((baseline, genq))
            stack.check_alive()
    ratios = [b.seconds / g.seconds for b, g in rounds]
    say(
        "  rounds (in-process wall / genq wall; odd rounds ran genq first): "
        + ", ".join(f"{r:.2f}" for r in ratios)
    )
    baseline, genq = rounds[ratios.index(statistics.median_low(ratios))]
    say("  the median round:")
    say(*describe(baseline, genq, jobs, tokens, processes))
    say(*breakdown(baseline, genq))


def describe(
    baseline: Baseline, genq: GenqRun, jobs: int, tokens: int, processes: int
) -> list[str]:
    ratio = baseline.seconds / genq.seconds
    per_job_ms = (genq.seconds - baseline.seconds) / jobs * processes * 1000
    return [
        f"  in-process, {processes} processes back to back: {baseline.jobs:,} jobs, "
        f"{baseline.tokens:,} tokens in {baseline.seconds:.2f} s = "
        f"{baseline.jobs / baseline.seconds:,.0f} jobs/s",
        f"  genq, one batch on {processes} worker processes: {jobs:,} jobs in "
        f"{genq.seconds:.2f} s = {jobs / genq.seconds:,.0f} jobs/s (submit_batch itself "
        f"{genq.submit_s:.2f} s); succeeded {genq.succeeded:,}/{jobs:,}, exactly {tokens} "
        f"tokens {genq.exact:,}/{jobs:,} "
        f"({met(genq.succeeded == jobs and genq.exact == jobs)})",
        f"  in-process wall / genq wall: {ratio:.2f} (target >= {TARGET_RATIO:.2f}: "
        f"{met(ratio >= TARGET_RATIO)}); overhead per job per process: {per_job_ms:.2f} ms",
    ]


def breakdown(baseline: Baseline, genq: GenqRun) -> list[str]:
    """Where a worker's time per job went, from the job records' timestamps."""
    by_worker: dict[str, list[JobTimes]] = defaultdict(list)
    for job in genq.times:
        by_worker[job.worker].append(job)
    first_start = min(t.started_ms for t in genq.times)
    last_end = max(t.finished_ms for t in genq.times)
    inprocess_ms = sum(baseline.spans) * 1000 / baseline.jobs
    lines = [
        f"  where genq's time went (job records, wall-clock ms): submit call -> first job "
        f"started {first_start - genq.began_ms:.0f} ms; last job ended -> wait() returned "
        f"{genq.returned_ms - last_end:.0f} ms; queue wait median "
        f"{statistics.median(t.started_ms - t.submitted_ms for t in genq.times):.0f} ms; "
        f"in-process: {inprocess_ms:.2f} ms per job"
    ]
    for worker, times in sorted(by_worker.items()):
        lines.append("    " + _worker_line(worker, sorted(times, key=lambda t: t.started_ms)))
    return [*lines, _cpu_line(baseline, genq)]


def _cpu_line(baseline: Baseline, genq: GenqRun) -> str:
    """CPU per job by role: on a machine with as many cores as worker processes, everything
    besides the pool processes' generation is taken from the jobs."""
    jobs = len(genq.times)
    parts = ", ".join(f"{role} {cpu * 1000 / jobs:.2f}" for role, cpu in genq.cpu_s.items())
    total = sum(genq.cpu_s.values()) * 1000 / jobs
    cores = psutil.cpu_count() or 1
    inprocess = baseline.cpu_s * 1000 / baseline.jobs
    pool = genq.cpu_s.get(POOL_ROLE, 0.0) * 1000 / jobs
    return (
        f"  CPU ms per job: genq {total:.2f} ({parts}); in-process {inprocess:.2f}; {cores} "
        f"cores x genq wall = {cores * genq.seconds * 1000 / jobs:.2f} ms per job\n"
        f"  in-process CPU / worker pool CPU per job: {inprocess / pool if pool else 0.0:.2f} "
        "(the ratio to expect where Redis, the relay and Celery's main processes have cores "
        "of their own; here they share the workers' cores)"
    )


def _worker_line(worker: str, times: Sequence[JobTimes]) -> str:
    gaps = [b.started_ms - a.finished_ms for a, b in itertools.pairwise(times)]
    span = times[-1].finished_ms - times[0].started_ms
    busy = sum(t.run_ms for t in times)
    return (
        f"{worker}: {len(times)} jobs in {span / 1000:.2f} s = {span / len(times):.2f} ms per "
        f"job: claimed -> ended {busy / len(times):.2f} ms mean "
        f"(median {statistics.median(t.run_ms for t in times):.0f}), ended -> next claimed "
        f"{statistics.fmean(gaps) if gaps else 0.0:.2f} ms mean "
        f"(median {statistics.median(gaps) if gaps else 0.0:.0f})"
    )
