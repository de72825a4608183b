"""The remote section: what genq's remote backend costs over streaming the same
llama_cpp.server directly. Each job is one request to it on both paths (the registry's and the
job's window hold the whole job), so both ask the server for the same work. The server runs
one request at a time (interrupt_requests=false), so both paths queue on it: what this
measures is what genq adds to a busy server, not the server's parallelism.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from genq import Client, JobSpec
from ops.bench import paths, report
from ops.bench.report import Batch, Run, met, say
from ops.bench.stack import Stack, local_stack, serving
from ops.llamaserver import HOST, LlamaServer, missing_modules

TARGET_RATIO = 0.9  # genq tok/s over direct tok/s, at least (median over rounds)
REMOTE_MODEL = "tiny-remote"  # the registry entry the worker streams from the server
WARM_TOKENS = 16
SETTLE_S = 0.2  # before each pass: the worker's acks and events after a pass are not the next's
DIRECT, GENQ = "direct SSE client", "genq remote backend"


def section(args: argparse.Namespace, cache: Path) -> None:
    """genq's remote backend against streaming the same llama_cpp.server directly (tiny
    model): one job at a time, then 16 at once (--slots 16). Target: genq / direct tok/s >=
    0.90."""
    if missing_modules():
        say(f"skipped: missing {', '.join(missing_modules())} (llama-cpp-python[server])")
        return
    with local_stack(cache, {}, workers=0) as stack:
        path, config = stack.model(report.BENCH_MODEL)
        job = JobSpec(
            model=REMOTE_MODEL, prompt=args.prompt, seed=args.seed, max_tokens=args.remote_tokens
        )
        stray = not args.allow_stray_bytes
        spec, described, eos = paths.workload(job, path, config.n_ctx, stray, eos=True)
        with serving(LlamaServer(path, config, cache / "remote-server.log")) as server:
            _add_remote_model(stack, server.port, spec.max_tokens)
            say(f"llama_cpp.server: {server.command_line()}", described)
            body, port, tokens = paths.request_body(spec, eos), server.port, spec.max_tokens
            paths.stream_sse(port, paths.request_body(spec, eos, WARM_TOKENS))  # its graph
            with Client(stack.settings) as client:
                _worker(stack, client, spec, 1)
                n = args.remote_jobs
                say(f"one job at a time, {n} per path a round; genq: 1 relay, 1 worker process")
                direct = functools.partial(
                    _one_by_one, DIRECT, lambda: paths.stream_sse(port, body), n
                )
                genq = functools.partial(
                    _one_by_one, GENQ, lambda: paths.stream_genq(client, spec), n
                )
                _compare(direct, genq, args.remote_rounds, tokens)
                slots = args.remote_concurrent_jobs
                _worker(stack, client, spec, slots)
                say(f"\n{slots} jobs at once per path; genq: 1 worker process with --slots {slots}")
                direct = functools.partial(paths.server_batch, DIRECT, port, [body] * slots)
                genq = functools.partial(paths.genq_batch, GENQ, client, [spec] * slots)
                _compare(direct, genq, args.remote_concurrent_rounds, tokens)
                stack.check_alive()


def _worker(stack: Stack, client: Client, spec: JobSpec, slots: int) -> None:
    """One worker process of `slots` slots (the jobs' threads) in place of the last, and its
    first task run."""
    if stack.workers:
        stack.worker("bench").stop()
    stack.env["GENQ_SLOTS"] = str(slots)
    stack.start_worker()
    warm = {"max_tokens": WARM_TOKENS, "window_tokens": WARM_TOKENS}
    paths.stream_genq(client, spec.model_copy(update=warm))


def _one_by_one(name: str, run: Callable[[], Run], jobs: int) -> Batch:
    started = time.perf_counter()
    return Batch(name, [run() for _ in range(jobs)], time.perf_counter() - started)


def _compare(
    direct: Callable[[], Batch], genq: Callable[[], Batch], rounds: int, tokens: int
) -> None:
    """Both paths once a round; figures are medians over rounds."""
    load = os.getloadavg()[0]
    pause = SETTLE_S
    done = report.alternate(report.paused(pause, direct), report.paused(pause, genq), rounds)
    ratios = [g.tokens_per_s / d.tokens_per_s for d, g in done]
    for n, (d, g) in enumerate(done):
        say(f"  round {n + 1}: {_pass(d)}, {_pass(g)}; genq / direct {ratios[n]:.3f}")
    rows = [_row([d for d, _ in done]), _row([g for _, g in done])]
    header = ("path", "tok/s all in", "first token ms", "tok/s per job", "wall s")
    say(report.table(header, rows))
    runs = [run for _, g in done for run in g.runs]
    exact = sum(run.tokens == tokens for run in runs)
    ratio, pooled = statistics.median(ratios), _pooled([g for _, g in done], [d for d, _ in done])
    added = statistics.median(g.first_token_ms - d.first_token_ms for d, g in done)
    say(
        f"genq jobs with exactly {tokens} tokens: {exact}/{len(runs)} ({met(exact == len(runs))})",
        f"genq / direct tok/s: median {ratio:.3f} over {rounds} rounds (range {min(ratios):.3f}"
        f"..{max(ratios):.3f}; target >= {TARGET_RATIO:.2f}: {met(ratio >= TARGET_RATIO)}); "
        f"all rounds pooled: {pooled:.3f}; first token added by genq: {added:.1f} ms median",
        f"load average (1 min) {load:.2f} before, {os.getloadavg()[0]:.2f} after, on "
        f"{os.cpu_count()} cores (the benchmark's server, worker, relay and Redis count in it)",
    )


def _pass(batch: Batch) -> str:
    return f"{batch.name} {batch.tokens_per_s:,.0f} tok/s ({batch.wall_s:.2f} s)"


def _row(passes: list[Batch]) -> list[str]:
    """Medians over rounds; tok/s per job from its first token to its last."""
    per_job = [statistics.median(run.tokens_per_s for run in b.runs) for b in passes]
    return [
        f"{passes[0].name} [{len(passes[0].runs)} jobs]",
        f"{statistics.median(b.tokens_per_s for b in passes):,.0f}",
        f"{statistics.median(b.first_token_ms for b in passes):.1f}",
        f"{statistics.median(per_job):,.0f}",
        f"{statistics.median(b.wall_s for b in passes):.2f}",
    ]


def _pooled(genq: list[Batch], direct: list[Batch]) -> float:
    """Tokens over summed walls, genq's over the direct client's."""
    rate = [sum(b.tokens for b in p) / sum(b.wall_s for b in p) for p in (genq, direct)]
    return rate[0] / rate[1]


def _add_remote_model(stack: Stack, port: int, window_tokens: int) -> None:
    """The server as a remote model in the stack's registry, before the worker reads it."""
    with Path(stack.env["GENQ_MODELS_FILE"]).open("a") as registry:
        registry.write(
            f'\n[models.{REMOTE_MODEL}]\nbackend = "remote"\n'
            f'base_url = "http://{HOST}:{port}/v1"\nwindow_tokens = {window_tokens}\n'
        )
