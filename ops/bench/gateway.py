"""The gateway section: what `genq serve` costs a client that speaks OpenAI's API. One job on
the benchmark's model (`--model`), EOS banned, streamed with the `openai` SDK from
/v1/completions through the gateway, against the same job read with genq's Python client
(submit, then the job's stream), the two paths alternating job by job. The same SDK then
streams the same job from the peers a user might run instead, llama-cpp-python's server and
llama.cpp's llama-server, on the same model file. Last, many SSE clients at once on one
gateway process (the tiny model: the gateway's cost, not the model's, is what is measured):
every stream must end complete, and the gateway's CPU time per token streamed is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from genq import Client
from genq.common.registry import LlamaModelConfig, ModelRegistry
from ops.bench import paths, stream
from ops.bench.report import (
    BAN_BIAS,
    BENCH_MODEL,
    MS_PER_S,
    PathResult,
    Run,
    Workload,
    job_model,
    met,
    say,
)
from ops.bench.stack import Stack, local_stack
from ops.llamaserver import HOST, LlamaCppServer, LlamaServer, missing_modules
from ops.llamaserver_build import find
from ops.localstack import Gateway

if TYPE_CHECKING:  # imported where used: the other sections run without the SDK installed
    import openai

TARGET_RATIO = 0.90  # gateway tok/s over genq client tok/s, at least
TARGET_ADDED_MS = 10.0  # first-token latency the gateway adds, median, at most
GATEWAY = "openai SDK via genq serve"
CLIENT = "genq Python client"
SDK_TIMEOUT_S = 300.0
CONCURRENT_TOKENS = 256  # per stream of the concurrent part, on the tiny model
NO_KEY = "genq-bench"  # the SDK wants a key; the gateway has none (loopback)


@dataclass(frozen=True)
class Concurrent:
    clients: int
    complete: int
    tokens: int
    wall_s: float
    cpu_s: float

    @property
    def cpu_us_per_token(self) -> float:
        return self.cpu_s / self.tokens * 1e6 if self.tokens else float("nan")


def section(args: argparse.Namespace, cache: Path) -> None:
    """The SDK through the gateway vs genq's client, the peers, then many clients at once."""
    if importlib.util.find_spec("openai") is None:
        say("skipped: the `openai` package is not installed (pip install openai)")
        return
    with local_stack(cache, {}) as stack, _gateway(stack, cache) as gateway:
        registry = ModelRegistry.from_settings(stack.settings)
        name = job_model(args.model)
        path, config = registry.local_path(name), registry.llama(name)
        workload, eos = stream.workload_for(args, name, path, config, 2000, 128)
        say(workload.describe(), f"gateway {gateway.url}: 1 uvicorn process; 1 relay, 1 worker")
        pair = _alternate(gateway, stack, workload, args.gateway_jobs, args.warmup)
        concurrent = asyncio.run(_concurrent(gateway, args.gateway_clients))
        stack.check_alive()
    peers = [] if args.no_server else _peers(path, config, workload, eos, cache, args)
    _summary(pair, peers, concurrent)


@contextmanager
def _gateway(stack: Stack, cache: Path) -> Iterator[Gateway]:
    gateway = Gateway(env=stack.env, log=cache / "gateway.log").start()
    try:
        yield gateway
    finally:
        gateway.stop()


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

    return openai.OpenAI(base_url=base_url, api_key=NO_KEY, max_retries=0, timeout=SDK_TIMEOUT_S)


def _alternate(
    gateway: Gateway, stack: Stack, workload: Workload, jobs: int, warmup: int
) -> tuple[PathResult, PathResult]:
    """Both paths job by job, which goes first alternating; warm-ups on both unmeasured."""
    say(f"gateway and client, {warmup} warm-up + {jobs} measured jobs each, alternating")
    request, model = _request(workload, None), workload.spec.model
    via_gateway: list[Run] = []
    via_client: list[Run] = []
    with _sdk(gateway.url + "/v1") as sdk, Client(stack.settings) as client:

        def through_gateway() -> Run:
            run = sdk_run(sdk, model, request)
            if run.tokens != workload.tokens:
                raise paths.BenchJobFailed(f"the gateway streamed {run.tokens} tokens")
            return run

        def through_client() -> Run:
            return paths.exact_genq(client, workload)

        for n in range(warmup + jobs):
            order = [(through_gateway, via_gateway), (through_client, via_client)]
            for measure, runs in order if n % 2 == 0 else reversed(order):
                run = measure()
                if n >= warmup:
                    runs.append(run)
    return PathResult(GATEWAY, via_gateway), PathResult(CLIENT, via_client)


async def _concurrent(gateway: Gateway, clients: int) -> Concurrent:
    """`clients` streams at once from one gateway process; its CPU time over the burst."""
    assert gateway.proc is not None
    process = psutil.Process(gateway.proc.pid)  # uvicorn with one worker: this very process
    request: dict[str, Any] = {
        "prompt": "Once upon a time",
        "max_tokens": CONCURRENT_TOKENS,
        "stream_options": {"include_usage": True},
        "extra_body": {"ignore_eos": True, "window_tokens": CONCURRENT_TOKENS},
    }
    import httpx2  # the SDK's HTTP client (openai 3.x); its default pool holds too few
    import openai

    limits = httpx2.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with (
        openai.DefaultAsyncHttpx2Client(limits=limits, timeout=SDK_TIMEOUT_S) as http,
        openai.AsyncOpenAI(
            base_url=gateway.url + "/v1", api_key=NO_KEY, max_retries=0, http_client=http
        ) as sdk,
    ):
        before, started = process.cpu_times(), time.perf_counter()
        counts = await asyncio.gather(*(_one(sdk, request) for _ in range(clients)))
        wall, after = time.perf_counter() - started, process.cpu_times()
    cpu = (after.user + after.system) - (before.user + before.system)
    complete = sum(count == CONCURRENT_TOKENS for count in counts)
    return Concurrent(clients, complete, sum(counts), wall, cpu)


async def _one(sdk: openai.AsyncOpenAI, request: dict[str, Any]) -> int:
    """Tokens of one stream by its usage chunk; 0 unless it ended by length with [DONE]."""
    finish, tokens = None, 0
    stream = await sdk.completions.create(model=BENCH_MODEL, stream=True, **request)
    async for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
        tokens = chunk.usage.completion_tokens if chunk.usage else tokens
    return tokens if finish == "length" else 0


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
        servers.append(LlamaServer(path, config, cache / "llama_cpp.server.log"))
    binary = find()
    if binary is None:
        say("llama-server skipped: not built (`make llama-server`)")
    else:
        log = cache / "llama-server.log"
        servers.append(LlamaCppServer(path, config, log, binary=binary, parallel=1))
    return [_peer(server, workload, eos, args) for server in servers]


def _peer(
    server: LlamaServer, workload: Workload, eos: int, args: argparse.Namespace
) -> PathResult:
    server.start()
    try:
        say(f"{server.name}: {server.command_line()}")
        request = _request(workload, eos)
        with _sdk(f"http://{HOST}:{server.port}/v1") as sdk:
            runs = [
                sdk_run(sdk, workload.spec.model, request)
                for _ in range(args.warmup + args.gateway_jobs)
            ]
    finally:
        server.stop()
    return PathResult(f"openai SDK via {server.name}", runs[args.warmup :])


def _summary(
    pair: tuple[PathResult, PathResult], peers: list[PathResult], concurrent: Concurrent
) -> None:
    via_gateway, via_client = pair
    for path in (via_gateway, via_client, *peers):
        say(
            f"  {path.name:34s} {path.tokens:5d} tokens {path.tokens_per_s:8,.1f} tok/s   "
            f"first token {path.first_token_ms:7.1f} ms (p90 {path.first_token_p90_ms:.1f})"
        )
    ratio = via_gateway.tokens_per_s / via_client.tokens_per_s
    added = _added_ms(via_gateway, via_client)
    say(
        f"gateway / client tok/s: {ratio:.2f} (target >= {TARGET_RATIO:.2f}: "
        f"{met(ratio >= TARGET_RATIO)})",
        f"first token added by the gateway: {added:+.1f} ms median (target <= "
        f"{TARGET_ADDED_MS:.0f} ms: {met(added <= TARGET_ADDED_MS)})",
    )
    for peer in peers:
        say(f"gateway / {peer.name}: {via_gateway.tokens_per_s / peer.tokens_per_s:.2f} x tok/s")
    c = concurrent
    say(
        f"{c.clients} SSE clients at once on one gateway process ({CONCURRENT_TOKENS} tokens "
        f"each, tiny model): {c.complete}/{c.clients} streams complete "
        f"({met(c.complete == c.clients)}); {c.tokens:,} tokens in {c.wall_s:.1f} s "
        f"({c.tokens / c.wall_s:,.0f} tok/s); gateway CPU {c.cpu_s:.2f} s = "
        f"{c.cpu_us_per_token:.0f} us per token"
    )


def _added_ms(via_gateway: PathResult, via_client: PathResult) -> float:
    """Median over jobs of the gateway's first token minus the client's: the paths ran job by
    job in turn, so each pair saw the same machine."""
    pairs = zip(via_gateway.runs, via_client.runs, strict=True)
    return statistics.median((g.first_token_s - c.first_token_s) * MS_PER_S for g, c in pairs)
