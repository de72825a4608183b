"""The remote section: what genq's remote backend costs over streaming the same server
directly. One llama_cpp.server on loopback serves the tiny model; the same jobs run one after
another both ways: by one client streaming SSE from /v1/completions (a new connection per
job), and through genq (submit -> worker streaming from the server -> pub/sub -> relay ->
stream -> reader) with one worker process. Each job is one server request on both paths (the
registry's and the job's window hold the whole job), so both ask the server for the same work;
the paths alternate in rounds, as the machine's speed drifts. Then the same job many at once
on each path (ops/bench/remote_concurrent.py), the worker restarted with as many slots.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from genq import Client, JobSpec
from genq.common.registry import LlamaModelConfig, ModelRegistry
from ops.bench import paths, remote_concurrent
from ops.bench.report import BENCH_MODEL, MS_PER_S, Run, Workload, base_spec, fit, met, say
from ops.bench.stack import Stack, local_stack, print_tail
from ops.llamaserver import HOST, LlamaServer, missing_modules
from ops.localstack import StackError

TARGET_RATIO = 0.9  # genq tok/s over direct tok/s, at least (median over rounds)
REMOTE_MODEL = "tiny-remote"  # the registry entry the worker streams from the server
WARM_TOKENS = 16
SETTLE_S = 0.2  # between passes: the worker's acks and events after a pass are not the next's
DIRECT = "direct SSE client"
SERVER = "llama_cpp.server SSE"


@dataclass(frozen=True)
class Model:
    name: str
    path: Path
    config: LlamaModelConfig


GENQ = "genq remote backend"


@dataclass(frozen=True)
class Pass:
    """One path's jobs run one after another; `wall_s` from the first request or submit until
    the last job's end."""

    name: str
    runs: list[Run]
    wall_s: float

    @property
    def tokens(self) -> int:
        return sum(run.tokens for run in self.runs)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s

    @property
    def first_token_ms(self) -> float:
        return statistics.median(run.first_token_s for run in self.runs) * MS_PER_S

    @property
    def decode_tokens_per_s(self) -> float:
        """Median per job, first token to last: the stream alone, without per-job costs."""
        return statistics.median(run.tokens_per_s for run in self.runs)


@dataclass(frozen=True)
class Round:
    """Both paths' passes of one round, run back to back on the same server; `ratio` is
    genq's tok/s over the direct client's."""

    direct: Pass
    genq: Pass
    ratio: float


def section(args: argparse.Namespace, cache: Path) -> None:
    missing = missing_modules()
    if missing:
        say(f'skipped: missing {", ".join(missing)} (pip install "llama-cpp-python[server]")')
        return
    with ExitStack() as resources:
        stack = resources.enter_context(local_stack(cache, {}, workers=0))
        registry = ModelRegistry.from_settings(stack.settings)
        model = Model(BENCH_MODEL, registry.local_path(BENCH_MODEL), registry.llama(BENCH_MODEL))
        workload, eos = _workload(args, model)
        server = resources.enter_context(_server(model, cache))
        _add_remote_model(stack, server.port, workload.tokens)
        stack.start_worker()
        client = resources.enter_context(Client(stack.settings))
        say(f"{SERVER}: {server.command_line()}", workload.describe())
        say(f"genq: 1 relay, 1 worker process (concurrency 1), model {REMOTE_MODEL!r}")
        load_before = os.getloadavg()[0]
        paths = _paths(client, server, workload, eos)
        rounds = _rounds(args, paths)
        stack.check_alive()
        _summary(rounds, workload.tokens)
        say(_load_line(load_before))
        _concurrent(args, stack, client, paths)
        stack.check_alive()


def _concurrent(args: argparse.Namespace, stack: Stack, client: Client, paths: Paths) -> None:
    """The same job, --remote-concurrent-jobs at once on each path: the worker restarted
    with as many slots (one process, a threads pool), against as many direct clients."""
    jobs, workload = args.remote_concurrent_jobs, paths.workload
    stack.worker("bench").stop()
    stack.env["GENQ_SLOTS"] = str(jobs)
    stack.start_worker()
    paths.genq(replace(workload, spec=_warm_spec(workload)))  # the new worker's first task
    say(
        "",
        f"concurrent: {jobs} jobs at once per path, {args.remote_concurrent_rounds} rounds; "
        f"genq: 1 relay, 1 worker process with --slots {jobs} (GENQ_SLOTS); the server runs "
        "one request at a time (interrupt_requests=false), so both paths queue on it",
    )
    load_before = os.getloadavg()[0]
    done = remote_concurrent.rounds(
        lambda: remote_concurrent.direct_burst(lambda: paths.direct(workload).tokens, jobs),
        lambda: remote_concurrent.genq_burst(client, workload, jobs),
        args.remote_concurrent_rounds,
    )
    say(*remote_concurrent.summary(done, jobs, workload.tokens), _load_line(load_before))


def _load_line(before: float) -> str:
    """Other processes on the machine weigh on one path more than the other by chance."""
    return (
        f"load average (1 min) when the rounds began {before:.2f}, at the end "
        f"{os.getloadavg()[0]:.2f}, on {os.cpu_count()} cores (the benchmark's own server, "
        "worker, relay and Redis count in it)"
    )


def _workload(args: argparse.Namespace, model: Model) -> tuple[Workload, int]:
    """The job, EOS biased away (the server has no ignore_eos), and the EOS token id."""
    with paths.vocabulary(model.path) as vocab:
        banned = paths.non_utf8_tokens(vocab) if args.utf8_only else []
        eos = vocab.token_eos()
        spec = base_spec(args.prompt, args.seed, args.remote_tokens, [*banned, eos], BENCH_MODEL)
        spec = spec.model_copy(update={"model": REMOTE_MODEL, "ignore_eos": False})
        return fit(
            spec, len(paths.prompt_tokens(vocab, spec.prompt or "")), model.config.n_ctx
        ), eos


@contextmanager
def _server(model: Model, cache: Path) -> Iterator[LlamaServer]:
    server = LlamaServer(model.path, model.config, cache / "remote-server.log")
    try:
        yield server.start()
    except Exception:  # the server's last words; not on Ctrl-C
        print_tail(server.log)
        raise
    finally:
        server.stop()


def _add_remote_model(stack: Stack, port: int, window_tokens: int) -> None:
    """The server as a remote model in the stack's registry, before the worker reads it."""
    with Path(stack.env["GENQ_MODELS_FILE"]).open("a") as registry:
        registry.write(
            f'\n[models.{REMOTE_MODEL}]\nbackend = "remote"\n'
            f'base_url = "http://{HOST}:{port}/v1"\n'
            f"window_tokens = {window_tokens}\n"
        )


@dataclass(frozen=True)
class Paths:
    """Each path's job runner (one job, start to end), and the measured job."""

    direct: Callable[[Workload], Run]
    genq: Callable[[Workload], Run]
    workload: Workload


def _paths(client: Client, server: LlamaServer, workload: Workload, eos: int) -> Paths:
    def direct(job: Workload) -> Run:
        try:
            return paths.stream_sse(HOST, server.port, paths.request_body(job.spec, eos))[0]
        except (paths.ServerError, OSError, http.client.HTTPException) as exc:
            raise StackError(f"{SERVER}: a streamed completion failed: {exc}") from exc

    def genq(job: Workload) -> Run:
        return paths.stream_genq(client, job.spec)

    return Paths(direct, genq, workload)


def _rounds(args: argparse.Namespace, paths: Paths) -> list[Round]:
    """One short job per path first (the server's graph, the worker's first task); then each
    round runs both passes, direct first in odd rounds and genq first in even ones."""
    warm = _warm_spec(paths.workload)
    paths.direct(replace(paths.workload, spec=warm))
    paths.genq(replace(paths.workload, spec=warm))
    jobs = args.remote_jobs
    say(f"{args.remote_rounds} rounds of {jobs} jobs per path, one job at a time")
    rounds = []
    for n in range(args.remote_rounds):
        if n % 2 == 0:
            direct = _pass(DIRECT, paths.direct, paths.workload, jobs)
            genq = _pass(GENQ, paths.genq, paths.workload, jobs)
        else:
            genq = _pass(GENQ, paths.genq, paths.workload, jobs)
            direct = _pass(DIRECT, paths.direct, paths.workload, jobs)
        rounds.append(Round(direct, genq, genq.tokens_per_s / direct.tokens_per_s))
        say(_round_line(n + 1, rounds[-1]))
    return rounds


def _warm_spec(workload: Workload) -> JobSpec:
    return workload.spec.model_copy(
        update={"max_tokens": WARM_TOKENS, "window_tokens": WARM_TOKENS}
    )


def _pass(name: str, run: Callable[[Workload], Run], workload: Workload, jobs: int) -> Pass:
    time.sleep(SETTLE_S)
    started = time.perf_counter()
    runs = [run(workload) for _ in range(jobs)]
    return Pass(name, runs, time.perf_counter() - started)


def _round_line(n: int, result: Round) -> str:
    direct, genq = result.direct, result.genq
    return (
        f"  round {n}: direct {direct.tokens_per_s:,.0f} tok/s ({direct.wall_s:.2f} s), genq "
        f"{genq.tokens_per_s:,.0f} tok/s ({genq.wall_s:.2f} s), genq / direct {result.ratio:.3f}"
    )


def _summary(rounds: list[Round], tokens: int) -> None:
    direct = [r.direct for r in rounds]
    genq = [r.genq for r in rounds]
    ratio = _median(r.ratio for r in rounds)
    added_ms = _median(p.first_token_ms for p in genq) - _median(p.first_token_ms for p in direct)
    pooled = _pooled(genq) / _pooled(direct)
    runs = [run for p in genq for run in p.runs]
    exact = sum(1 for run in runs if run.tokens == tokens)
    say(
        "",
        _path_line(direct),
        _path_line(genq),
        f"genq jobs with exactly {tokens} tokens: {exact}/{len(runs)} "
        f"({met(exact == len(runs))}); tokens per job seen: "
        f"{sorted({run.tokens for run in runs})}",
        f"genq / direct tok/s: median {ratio:.3f} over {len(rounds)} rounds (range "
        f"{min(r.ratio for r in rounds):.3f}..{max(r.ratio for r in rounds):.3f}; target >= "
        f"{TARGET_RATIO:.2f}: {met(ratio >= TARGET_RATIO)}); all rounds pooled (tokens / "
        f"summed walls): {pooled:.3f}",
        f"first-token latency added by genq (medians over rounds): {added_ms:.1f} ms",
    )


def _path_line(passes: list[Pass]) -> str:
    return (
        f"{passes[0].name}: {passes[0].tokens:,} tokens per round; medians over rounds: "
        f"{_median(p.tokens_per_s for p in passes):,.0f} tok/s all in (requests, first tokens, "
        f"gaps between jobs), first token {_median(p.first_token_ms for p in passes):.1f} ms, "
        f"{_median(p.decode_tokens_per_s for p in passes):,.0f} tok/s per job from first "
        "token to last"
    )


def _pooled(passes: list[Pass]) -> float:
    return sum(p.tokens for p in passes) / sum(p.wall_s for p in passes)


def _median(values: Iterable[float]) -> float:
    return statistics.median(values)
