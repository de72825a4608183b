"""The stream section: one job on `--model`, EOS banned, measured job by job in turn (a
shared machine's speed drifts by tens of percent, and so weighs on both alike): in process
with llama-cpp-python alone (the ceiling), and genq end to end; then llama-cpp-python's own
OpenAI-compatible server streaming SSE (what a user would run instead).
"""

from __future__ import annotations

import argparse
import http.client
import time
from pathlib import Path

from llama_cpp import Llama

from genq import Client
from genq.common.registry import LlamaModelConfig, ModelRegistry
from ops.bench import paths
from ops.bench.report import (
    TINY,
    PathResult,
    Run,
    Workload,
    base_spec,
    fit,
    job_model,
    met,
    path_table,
    ratio,
    say,
)
from ops.bench.stack import local_stack, serving
from ops.llamaserver import LlamaServer, missing_modules
from ops.localstack import StackError

TARGET_RATIO = 0.90  # genq tok/s over in-process tok/s, at least
TARGET_ADDED_MS = 15.0  # first-token latency the queue adds, median, at most
TINY_TOKENS, REAL_TOKENS = 2000, 128
SETTLE_S = 0.05  # between jobs: the worker acks its task after the done frame
SERVER = "llama_cpp.server SSE"


def section(args: argparse.Namespace, cache: Path) -> None:
    env = {}
    if args.chunk_tokens is not None:
        env["GENQ_CHUNK_TOKENS"] = str(args.chunk_tokens)
    if args.chunk_interval_ms is not None:
        env["GENQ_CHUNK_INTERVAL_MS"] = str(args.chunk_interval_ms)
    with local_stack(cache, env) as stack, Client(stack.settings) as client:
        registry = ModelRegistry.from_settings(stack.settings)
        name = job_model(args.model)
        path, config = registry.local_path(name), registry.llama(name)
        workload, eos = workload_for(args, name, path, config, TINY_TOKENS, REAL_TOKENS)
        chunking = stack.settings.chunk_tokens, stack.settings.chunk_interval_ms
        say(f"model {name!r}: {path}", workload.describe())
        say("genq: 1 relay, 1 worker process, chunks of {} tokens / {} ms".format(*chunking))
        with paths.loaded(path, config) as llm:
            inprocess, genq = _paired(args, llm, client, workload)
        stack.check_alive()
    server = None if args.no_server else _server(args, path, config, workload, eos, cache)
    rows = [(inprocess, "1.00 x in-process"), (genq, ratio(genq, inprocess, "in-process"))]
    rows += [(server, ratio(server, genq, "genq"))] if server else []
    say("", path_table(rows), "")
    _verdicts(inprocess, genq)


def workload_for(
    args: argparse.Namespace,
    name: str,
    path: Path,
    config: LlamaModelConfig,
    tiny: int,
    real: int,
) -> tuple[Workload, int]:
    """The job (`--max-tokens`, else `tiny` or `real` tokens), and the model's EOS id (for
    servers, which have no ignore_eos). Only the tiny model's stray bytes are banned: with
    them a server holds text back and re-decodes it, quadratically."""
    on_tiny = args.model == TINY
    size = args.max_tokens or (tiny if on_tiny else real)
    with paths.vocabulary(path) as vocab:
        banned = paths.non_utf8_tokens(vocab) if args.utf8_only and on_tiny else []
        spec = base_spec(args.prompt, args.seed, size, banned, name)
        count = len(paths.prompt_tokens(vocab, spec.prompt or ""))
        return fit(spec, count, config.n_ctx), vocab.token_eos()


def _paired(
    args: argparse.Namespace, llm: Llama, client: Client, workload: Workload
) -> tuple[PathResult, PathResult]:
    say(f"in-process and genq, {args.warmup} warm-up + {args.jobs} measured jobs each, in turn")
    for _ in range(args.warmup):
        paths.generate(llm, workload.spec, workload.tokens)
        paths.exact_genq(client, workload)
    local: list[Run] = []
    queued: list[Run] = []
    for _ in range(args.jobs):
        time.sleep(SETTLE_S)
        local.append(paths.generate(llm, workload.spec, workload.tokens)[0])
        time.sleep(SETTLE_S)
        queued.append(paths.exact_genq(client, workload))
    return PathResult(paths.INPROCESS, local), PathResult(paths.GENQ, queued)


def _server(
    args: argparse.Namespace,
    path: Path,
    config: LlamaModelConfig,
    workload: Workload,
    eos: int,
    cache: Path,
) -> PathResult | None:
    missing = missing_modules()
    if missing:
        say(f"skipped {SERVER}: missing {', '.join(missing)} (llama-cpp-python[server])")
        return None
    try:
        with serving(LlamaServer(path, config, cache / "llama_cpp.server.log")) as server:
            say(f"{SERVER}: {server.command_line()}")
            paths.stream_sse(server.port, paths.request_body(workload.spec, eos, 16))  # warm
            body = paths.request_body(workload.spec, eos)
            runs = [paths.stream_sse(server.port, body) for _ in range(args.server_jobs)]
    except (StackError, paths.ServerError, OSError, http.client.HTTPException) as exc:
        say(f"skipped {SERVER}: {exc}")
        return None
    return PathResult(SERVER, runs)


def _verdicts(inprocess: PathResult, genq: PathResult) -> None:
    rate = genq.tokens_per_s / inprocess.tokens_per_s
    added = genq.first_token_ms - inprocess.first_token_ms
    added_p90 = genq.first_token_p90_ms - inprocess.first_token_ms
    say(
        f"genq / in-process tok/s: {rate:.2f} (target >= {TARGET_RATIO:.2f}: "
        f"{met(rate >= TARGET_RATIO)})",
        f"first-token latency added by the queue (submit to first token frame, minus "
        f"in-process): median {added:.2f} ms, p90 {added_p90:.2f} ms over {len(genq.runs)} jobs "
        f"(target median <= {TARGET_ADDED_MS:.0f} ms: {met(added <= TARGET_ADDED_MS)})",
    )
