"""The gateway section: what `genq serve` costs a client that speaks OpenAI's API. One job on
--model, EOS banned, streamed with the `openai` SDK from /v1/completions through the gateway,
against the same job read with genq's Python client, the two alternating job by job; then the
same SDK against the peers a user might run instead, llama_cpp.server and llama-server, on
the same model file. Last, many SSE clients at once on one gateway process (the tiny model:
the gateway's cost, not the model's): every stream must end complete, and the gateway's CPU
time per token streamed is reported.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import importlib.util
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from genq import Client, JobSpec
from genq.common.registry import LlamaModelConfig
from ops.bench import paths, stream
from ops.bench.report import (
    BAN_BIAS,
    BENCH_MODEL,
    DEFAULT_PROMPT,
    MS_PER_S,
    PathResult,
    Run,
    Workload,
    alternate,
    job_model,
    met,
    path_table,
    ratio,
    say,
)
from ops.bench.stack import Stack, cpu_s, local_stack, serving
from ops.llamaserver import HOST, LlamaCppServer, LlamaServer, missing_modules
from ops.llamaserver_build import find
from ops.localstack import Gateway

if TYPE_CHECKING:  # imported where used: the other sections run without the SDK installed
    import openai

TARGET_RATIO = 0.90  # gateway tok/s over genq client tok/s, at least
TARGET_ADDED_MS = 10.0  # first-token latency the gateway adds, median, at most
GATEWAY, CLIENT = "openai SDK via genq serve", "genq Python client"
SDK_TIMEOUT_S = 300.0
CONCURRENT_TOKENS = 256  # per stream of the concurrent part, on the tiny model


def section(args: argparse.Namespace, cache: Path) -> None:
    """The SDK through the gateway vs genq's client, the peers, then many clients at once."""
    if importlib.util.find_spec("openai") is None:
        say("skipped: the `openai` package is not installed (pip install openai)")
        return
    with local_stack(cache, {}) as stack, serving(Gateway(stack.env, cache / "gateway.log")) as gw:
        name = job_model(args.model)
        path, config = stack.model(name)
        workload, eos = stream.workload_for(args, name, path, config, 2000, 128)
        say(workload.describe(), f"gateway {gw.url}: 1 uvicorn process; 1 relay, 1 worker")
        via_gateway, via_client = _alternate(gw, stack, workload, args)
        concurrent = _concurrent(stack, gw, args.gateway_clients)
        stack.check_alive()
    peers = [] if args.no_server else _peers(path, config, workload, eos, cache, args)
    rows = [(via_gateway, ratio(via_gateway, via_client, "client")), (via_client, "1.00 x")]
    for peer in peers:
        rows.append((peer, f"gateway {via_gateway.tokens_per_s / peer.tokens_per_s:.2f} x"))
    tok_s, added = via_gateway.tokens_per_s / via_client.tokens_per_s, _added_ms(rows)
    say(
        "",
        path_table(rows),
        f"gateway / client tok/s: {tok_s:.2f} (target >= {TARGET_RATIO:.2f}: "
        f"{met(tok_s >= TARGET_RATIO)})",
        f"first token added by the gateway: {added:+.1f} ms median (target <= "
        f"{TARGET_ADDED_MS:.0f} ms: {met(added <= TARGET_ADDED_MS)})",
        concurrent,
    )


def _request(workload: Workload, eos: int | None) -> dict[str, Any]:
    """The job as SDK arguments: genq's own fields as extra body fields; a peer, which has
    no ignore_eos, gets EOS banned by a logit bias instead (eos given)."""
    spec = workload.spec
    extra: dict[str, Any] = {"top_k": spec.top_k, "min_p": spec.min_p}
    extra["repeat_penalty"] = spec.repeat_penalty
    bias = {str(token): int(value) for token, value in spec.logit_bias.items()}
    if eos is None:
        extra.update(ignore_eos=True, window_tokens=spec.window_tokens)
    else:
        bias[str(eos)] = int(BAN_BIAS)
    return {
        "prompt": spec.prompt,
        "max_tokens": workload.tokens,
        "temperature": spec.temperature,
        "top_p": spec.top_p,
        "seed": spec.seed,
        "logit_bias": bias,
        "stream_options": {"include_usage": True},  # llama_cpp.server ignores it
        "extra_body": extra,
    }


def sdk_run(sdk: openai.OpenAI, model: str, request: dict[str, Any]) -> Run:
    """One streamed completion: clock from the request to the first text, then to the end.
    It must end by length (EOS is banned). Tokens by the usage chunk where the server sends
    one, else one per chunk (llama_cpp.server streams a token per event)."""
    started = time.perf_counter()
    first: float | None = None
    finish, usage, pieces = None, None, 0
    for chunk in sdk.completions.create(model=model, stream=True, **request):
        for choice in chunk.choices:
            if first is None and choice.text:
                first = time.perf_counter()
            pieces += choice.finish_reason is None
            finish = choice.finish_reason or finish
        usage = chunk.usage.completion_tokens if chunk.usage else usage
    ended = time.perf_counter()
    if first is None or finish != "length":
        raise paths.BenchJobFailed(f"an SDK stream ended with {finish!r}, no text: {first}")
    return Run(pieces if usage is None else usage, first - started, ended - first)


def _sdk(base_url: str) -> openai.OpenAI:
    import openai

    # The SDK wants a key; the gateway on loopback has none.
    return openai.OpenAI(
        base_url=f"{base_url}/v1", api_key="genq-bench", max_retries=0, timeout=SDK_TIMEOUT_S
    )


def _alternate(
    gateway: Gateway, stack: Stack, workload: Workload, args: argparse.Namespace
) -> tuple[PathResult, PathResult]:
    """Both paths job by job, which goes first alternating; warm-ups on both unmeasured."""
    say(f"gateway and client, {args.warmup} warm-up + {args.gateway_jobs} jobs each, in turn")
    request, model = _request(workload, None), workload.spec.model
    with _sdk(gateway.url) as sdk, Client(stack.settings) as client:

        def through_gateway() -> Run:
            run = sdk_run(sdk, model, request)
            if run.tokens != workload.tokens:
                raise paths.BenchJobFailed(f"the gateway streamed {run.tokens} tokens")
            return run

        pairs = alternate(
            through_gateway,
            lambda: paths.exact_genq(client, workload),
            args.warmup + args.gateway_jobs,
        )[args.warmup :]
    return PathResult(GATEWAY, [g for g, _ in pairs]), PathResult(CLIENT, [c for _, c in pairs])


def _concurrent(stack: Stack, gateway: Gateway, clients: int) -> str:
    """`clients` SSE streams at once from one gateway process; its CPU time over the burst."""
    process = psutil.Process(stack.pid(gateway))  # uvicorn with one worker: this very process
    spec = JobSpec(model=BENCH_MODEL, prompt=DEFAULT_PROMPT, seed=1, ignore_eos=True)
    spec = spec.model_copy(update={"max_tokens": CONCURRENT_TOKENS})
    body = {**paths.request_body(spec, None), "model": BENCH_MODEL}
    body |= {"window_tokens": CONCURRENT_TOKENS, "stream_options": {"include_usage": True}}
    before, started = cpu_s([process]), time.perf_counter()
    counts = paths.at_once([functools.partial(_tokens, gateway.port, body)] * clients)
    wall, cpu = time.perf_counter() - started, cpu_s([process]) - before
    complete, tokens = sum(count == CONCURRENT_TOKENS for count in counts), sum(counts)
    return (
        f"{clients} SSE clients at once on one gateway process ({CONCURRENT_TOKENS} tokens "
        f"each, tiny model): {complete}/{clients} streams complete "
        f"({met(complete == clients)}); {tokens:,} tokens in {wall:.1f} s "
        f"({tokens / wall:,.0f} tok/s); gateway CPU {cpu:.2f} s = "
        f"{cpu / max(tokens, 1) * 1e6:.0f} us per token"
    )


def _tokens(port: int, body: dict[str, Any]) -> int:
    """One stream's tokens; 0 unless it ended by length."""
    try:
        return paths.stream_sse(port, body).tokens
    except (paths.ServerError, OSError, http.client.HTTPException):
        return 0


def _peers(
    path: Path,
    config: LlamaModelConfig,
    workload: Workload,
    eos: int,
    cache: Path,
    args: argparse.Namespace,
) -> list[PathResult]:
    """The same SDK and job against llama_cpp.server and llama-server, one job at a time."""
    servers: list[LlamaServer] = []
    if missing_modules():
        say(f"llama_cpp.server skipped: {', '.join(missing_modules())} missing")
    else:
        servers.append(LlamaServer(path, config, cache / "gateway-llama_cpp.server.log"))
    binary = find()
    if binary is None:
        say("llama-server skipped: not built (`make llama-server`)")
    else:
        log = cache / "gateway-llama-server.log"
        servers.append(LlamaCppServer(path, config, log, binary=binary, parallel=1))
    results = []
    for server in servers:
        with serving(server), _sdk(f"http://{HOST}:{server.port}") as sdk:
            say(f"{server.name}: {server.command_line()}")
            request, jobs = _request(workload, eos), args.warmup + args.gateway_jobs
            runs = [sdk_run(sdk, workload.spec.model, request) for _ in range(jobs)]
        results.append(PathResult(f"openai SDK via {server.name}", runs[args.warmup :]))
    return results


def _added_ms(rows: list[tuple[PathResult, str]]) -> float:
    """Median over jobs of the gateway's first token minus the client's: the paths ran job by
    job in turn, so each pair saw the same machine."""
    pairs = zip(rows[0][0].runs, rows[1][0].runs, strict=True)
    return statistics.median((g.first_token_s - c.first_token_s) * MS_PER_S for g, c in pairs)
