"""The streaming section: one job on the benchmark's model (`--model`), end-of-sequence
banned, measured three ways in turn: the worker's own backend and generation loop in this
process (the ceiling: ops/bench/inprocess.py), genq end to end (producer -> Celery -> worker ->
pub/sub -> relay -> Redis Stream -> reader), and llama-cpp-python's own OpenAI-compatible server
streaming SSE (what a user would run instead).
"""

from __future__ import annotations

import argparse
import http.client
import statistics
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path

from genq.common.registry import LlamaModelConfig, ModelRegistry
from genq.producer.client import Client
from genq.workers.backends.llama import LlamaBackend
from ops.bench import genq_stream, inprocess, openai_server, paired, report
from ops.bench.measure import PathResult
from ops.bench.paired import Paired
from ops.bench.report import met, say
from ops.bench.stack import Stack, local_stack, print_tail
from ops.bench.workload import (
    REAL_MODEL_TOKENS,
    REQUESTED_TOKENS,
    TINY,
    Workload,
    base_spec,
    fit,
    job_model,
)
from ops.localstack import StackError

TARGET_RATIO = 0.90  # genq tok/s over in-process tok/s, at least
TARGET_ADDED_MS = 15.0  # first-token latency the queue adds, median, at most
HELD_BACK_SHARE = 0.5  # first event later than this share of the job: the stream was held


@dataclass(frozen=True)
class Model:
    name: str
    path: Path
    config: LlamaModelConfig


def section(args: argparse.Namespace, cache: Path) -> None:
    """In-process, genq end to end and llama_cpp.server, on one job of the model."""
    with ExitStack() as resources:
        stack = resources.enter_context(local_stack(cache, _worker_env(args)))
        registry = ModelRegistry.from_settings(stack.settings)
        name = job_model(args.model)
        model = Model(name, registry.local_path(name), registry.llama(name))
        chunking = stack.settings.chunk_tokens, stack.settings.chunk_interval_ms
        say(f"model {name!r}: {model.path}")
        say("genq: 1 relay, 1 worker process, chunks of {} tokens / {} ms".format(*chunking))
        backend = resources.enter_context(closing(inprocess.load(name, model.path, model.config)))
        workload, eos = _workload(args, model, backend)
        try:
            pair = _paired(args, backend, stack, workload)
        except genq_stream.BenchJobFailed:
            stack.check_alive()  # a relay or worker that died says more than the job
            raise
        stack.check_alive()
        backend.close()  # free this process's copy before the server loads its own
        server = None if args.no_server else _server(args, model, workload, eos, cache)
    _summary(pair, server)


def _worker_env(args: argparse.Namespace) -> dict[str, str]:
    env = {}
    if args.chunk_tokens is not None:
        env["GENQ_CHUNK_TOKENS"] = str(args.chunk_tokens)
    if args.chunk_interval_ms is not None:
        env["GENQ_CHUNK_INTERVAL_MS"] = str(args.chunk_interval_ms)
    return env


def _workload(
    args: argparse.Namespace, model: Model, backend: LlamaBackend
) -> tuple[Workload, int]:
    """The job, and the model's EOS token id (for the server, which has no ignore_eos). Only
    the tiny model's stray byte tokens are banned: a trained model rarely samples one."""
    tiny = args.model == TINY
    size = args.max_tokens or (REQUESTED_TOKENS if tiny else REAL_MODEL_TOKENS)
    with inprocess.vocabulary(model.path) as vocab:
        banned = inprocess.non_utf8_tokens(vocab) if args.utf8_only and tiny else []
        eos = vocab.token_eos()
    spec = base_spec(args.prompt, args.seed, size, banned, model=model.name)
    workload = fit(spec, inprocess.count_prompt(backend, spec), backend.n_ctx)
    say(workload.describe())
    return workload, eos


def _paired(
    args: argparse.Namespace, backend: LlamaBackend, stack: Stack, workload: Workload
) -> Paired:
    say(f"in-process and genq, {args.warmup} warm-up + {args.jobs} measured jobs each, in turn")
    with Client(stack.settings) as client:
        result = paired.measure(backend, client, workload, args.jobs, args.warmup)
    outcomes = result.genq
    chunks = statistics.median(o.chunks for o in outcomes)
    worker_rate = statistics.median(o.worker_tokens_per_s for o in outcomes)
    _say_path(result.baseline)
    _say_path(result.genq_result)
    say(
        f"  {chunks:.0f} token frames per job; the worker's own figure (job start to end, from "
        f"the done frame): {worker_rate:,.0f} tok/s; "
        f"token ids identical to in-process: {'yes' if result.same_tokens else 'NO'}"
    )
    return result


def _server(
    args: argparse.Namespace, model: Model, workload: Workload, eos: int, cache: Path
) -> PathResult | None:
    missing = openai_server.missing_modules()
    if missing:
        say(
            f"skipped {openai_server.NAME}: missing {', '.join(missing)} "
            '(pip install "llama-cpp-python[server]")'
        )
        return None
    server = openai_server.LlamaServer(model.path, model.config, cache / "llama-server.log")
    try:
        server.start()
    except StackError as exc:
        print_tail(server.log)
        say(f"skipped {openai_server.NAME}: it did not start: {exc}")
        server.stop()
        return None
    say(f"{openai_server.NAME}: {server.command_line()}")
    try:
        result = openai_server.measure(server.port, workload, eos, args.server_jobs)
    except (openai_server.ServerError, OSError, http.client.HTTPException) as exc:
        print_tail(server.log)
        say(f"skipped {openai_server.NAME}: a streamed completion failed: {exc}")
        return None
    finally:
        server.stop()
    _say_path(result)
    return result


def _summary(result: Paired, server: PathResult | None) -> None:
    baseline, genq = result.baseline, result.genq_result
    rows = [
        report.Row(baseline, "1.00 x in-process"),
        report.Row(genq, report.ratio(genq, baseline, "in-process")),
    ]
    if server is not None:
        rows.append(report.Row(server, report.ratio(server, genq, "genq")))
    say("", report.table(rows), "")
    _verdicts(baseline, genq, server)


def _verdicts(baseline: PathResult, genq: PathResult, server: PathResult | None) -> None:
    rate = genq.tokens_per_s / baseline.tokens_per_s
    ok = met(rate >= TARGET_RATIO)
    say(f"genq / in-process tok/s: {rate:.2f} (target >= {TARGET_RATIO:.2f}: {ok})")
    added = genq.first_token_ms - baseline.first_token_ms
    added_p90 = genq.first_token_p90_ms - baseline.first_token_ms
    say(
        f"first-token latency added by the queue (submit to first token frame, minus "
        f"in-process): median {added:.2f} ms, p90 {added_p90:.2f} ms over {len(genq.runs)} jobs "
        f"(target median <= {TARGET_ADDED_MS:.0f} ms: {met(added <= TARGET_ADDED_MS)})"
    )
    if server is not None:
        _server_verdict(server, genq)


def _server_verdict(server: PathResult, genq: PathResult) -> None:
    say(
        f"llama_cpp.server / genq: tok/s {server.tokens_per_s / genq.tokens_per_s:.2f}, "
        f"whole job {server.job_ms / genq.job_ms:.1f}x as long, first token "
        f"{server.first_token_ms:.1f} ms vs {genq.first_token_ms:.1f} ms"
    )
    if server.first_token_ms > HELD_BACK_SHARE * server.job_ms:
        say(
            f"  note: llama_cpp.server sent its first event {server.first_token_ms:.0f} ms into "
            f"a {server.job_ms:.0f} ms job: it holds back text that does not decode as UTF-8 "
            "(the tiny model emits stray bytes), re-decoding all held tokens on each new one, "
            "and flushes at the end; its tok/s is that final burst. Without "
            "--allow-stray-bytes stray bytes are banned on every path and it streams token "
            "by token."
        )


def _say_path(result: PathResult) -> None:
    say(
        f"{result.name}: {result.tokens} tokens, median {result.tokens_per_s:,.0f} tok/s, "
        f"first token median {result.first_token_ms:.2f} ms (p90 {result.first_token_p90_ms:.2f})"
        f" over {len(result.runs)} jobs"
    )
