"""The stream, gateway and remote sections: one job, EOS banned, streamed the ways a user might
run it, the paths measured in turn (a shared machine's speed drifts by tens of percent, and so
weighs on both alike). The gateway's many clients run on the tiny model: the gateway's cost,
not the model's. In the remote section each job is one request to a llama_cpp.server on both
paths (the registry's and the job's window hold the whole job), so both ask the server for the
same work; it runs one request at a time (interrupt_requests=false), so both paths queue on
it: what this measures is what genq adds to a busy server, not the server's parallelism."""

from __future__ import annotations

import argparse
import functools
import http.client
import importlib.util
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from genq import Client, JobSpec
from genq.common.registry import LlamaModelConfig
from ops.bench import paths, report, responses
from ops.bench.report import Batch, PathResult, Run, met, say
from ops.bench.stack import Stack, cpu_s, local_stack, pid, serving
from ops.llamaserver import HOST, LlamaCppServer, LlamaServer, missing_modules
from ops.llamaserver_build import find
from ops.localstack import Gateway, StackError

if TYPE_CHECKING:  # imported where used: the other sections run without the SDK installed
    import openai

TARGET_RATIO = 0.90  # genq tok/s over in-process tok/s, and the gateway's over the client's
TARGET_ADDED_MS = 15.0  # first-token latency the queue adds, median, at most
TARGET_GATEWAY_MS = 10.0  # first-token latency the gateway adds, median, at most
SETTLE_S = 0.05  # between jobs: the worker acks its task after the done frame
WARM_TOKENS = 16  # a peer's first request, unmeasured
SDK_TIMEOUT_S = 300.0
CONCURRENT_TOKENS = 256  # per stream of the gateway's concurrent part, on the tiny model
PEER_ERRORS = (StackError, paths.ServerError, OSError, http.client.HTTPException)
REMOTE_RATIO = 0.9  # genq tok/s over direct tok/s, at least (median over rounds)
REMOTE_MODEL = "tiny-remote"  # the registry entry the worker streams from the server
REMOTE_SETTLE_S = 0.2  # before each pass: the worker's acks and events after one are not the next's
DIRECT, REMOTE = "direct SSE client", "genq remote backend"


def section(args: argparse.Namespace, cache: Path) -> None:
    """One job (2000 tokens on tiny, 128 on a real model) in process with `Llama.generate()`
    and through genq, job by job in turn (--jobs). Targets: genq >= 0.90 x in-process tok/s;
    <= 15 ms first-token latency added (median). (The servers: the gateway section.)"""
    with local_stack(cache, {}) as stack, Client(stack.settings) as client:
        spec, described, _, path, config = _workload(args, stack)
        settings = stack.settings
        say(
            f"model {spec.model!r}: {path}",
            described,
            f"genq: 1 relay, 1 worker process, chunks of {settings.chunk_tokens} tokens / "
            f"{settings.chunk_interval_ms} ms",
            f"in-process and genq, {args.warmup} warm-up + {args.jobs} jobs each, in turn",
        )
        with paths.loaded(path, config) as llm:
            local = report.paused(SETTLE_S, lambda: paths.generate(llm, spec))
            queued = report.paused(SETTLE_S, lambda: paths.stream_genq(client, spec))
            pairs = report.alternate(local, queued, args.warmup + args.jobs)[args.warmup :]
        stack.check_alive()
    inprocess = PathResult(paths.INPROCESS, [a for a, _ in pairs])
    genq = PathResult(paths.GENQ, [b for _, b in pairs])
    rows = [(inprocess, "1.00 x in-process"), (genq, report.ratio(genq, inprocess, "in-process"))]
    rate = genq.tokens_per_s / inprocess.tokens_per_s
    added = genq.first_token_ms - inprocess.first_token_ms
    p90 = genq.ms(90, lambda run: run.first_token_s)
    say(
        "",
        report.path_table(rows),
        "",
        f"genq / in-process tok/s: {rate:.2f} (target >= {TARGET_RATIO:.2f}: "
        f"{met(rate >= TARGET_RATIO)})",
        f"first-token latency added by the queue (submit to first token frame, minus "
        f"in-process): median {added:.2f} ms, p90 {p90 - inprocess.first_token_ms:.2f} ms over "
        f"{len(genq.runs)} jobs (target median <= {TARGET_ADDED_MS:.0f} ms: "
        f"{met(added <= TARGET_ADDED_MS)})",
    )


def _workload(
    args: argparse.Namespace, stack: Stack
) -> tuple[JobSpec, str, int, Path, LlamaModelConfig]:
    """The job (`--max-tokens`, else 2000 tokens on tiny, 128 on a real model), its
    description, the model's EOS id, its file and options. Only the tiny model's stray bytes
    are banned."""
    name, on_tiny = report.job_model(args.model), args.model == report.TINY
    path, config = stack.model(name)
    tokens = args.max_tokens or (2000 if on_tiny else 128)
    job = JobSpec(model=name, prompt=args.prompt, seed=args.seed, max_tokens=tokens)
    stray = on_tiny and not args.allow_stray_bytes
    return *paths.workload(job, path, config.n_ctx, stray, eos=False), path, config


def gateway(args: argparse.Namespace, cache: Path) -> None:
    """One job streamed with the openai SDK through `genq serve` against genq's client, and
    against llama_cpp.server and llama-server; then 64 SSE clients at once on one gateway
    (tiny model); then the Responses API against chat completions, a reattach, and the peers'
    /v1/responses. Targets: gateway >= 0.90 x client tok/s; <= 10 ms first token added;
    Responses >= 0.95 x chat tok/s; <= 5 ms first token added; reattach <= 20 ms."""
    if importlib.util.find_spec("openai") is None:
        say("skipped: the `openai` package is not installed (pip install openai)")
        return
    with local_stack(cache, {}) as stack, serving(Gateway(stack.env, cache / "gateway.log")) as gw:
        spec, described, eos, path, config = _workload(args, stack)
        say(described, f"gateway {gw.url}: 1 uvicorn process; 1 relay, 1 worker")
        say(f"gateway and client, {args.warmup} warm-up + {args.gateway_jobs} jobs each, in turn")
        body = {**paths.request_body(spec, None), "window_tokens": spec.window_tokens}
        with _sdk(gw.url) as sdk, Client(stack.settings) as client:
            through, direct = lambda: sdk_run(sdk, body), lambda: paths.stream_genq(client, spec)
            pairs = report.alternate(through, direct, args.warmup + args.gateway_jobs)
            api, versus_chat = responses.compare(sdk, body, args.warmup, args.gateway_jobs)
            concurrent = _concurrent(gw, args.gateway_clients)
            reattached = responses.reattach(stack, sdk, args.prompt)
        stack.check_alive()
    via_gateway = PathResult("openai SDK via genq serve", [a for a, _ in pairs[args.warmup :]])
    via_client = PathResult("genq Python client", [b for _, b in pairs[args.warmup :]])
    rows = [(via_gateway, report.ratio(via_gateway, via_client, "client")), (via_client, "1.00 x")]
    peers, peer_apis = _sdk_peers(path, config, spec, eos, cache, args)
    for peer in peers:
        rows.append((peer, f"gateway {via_gateway.tokens_per_s / peer.tokens_per_s:.2f} x"))
    rate = via_gateway.tokens_per_s / via_client.tokens_per_s
    pairs_ms = zip(via_gateway.runs, via_client.runs, strict=True)  # the same machine, in turn
    added = statistics.median(
        (g.first_token_s - c.first_token_s) * report.MS_PER_S for g, c in pairs_ms
    )
    say(
        "",
        report.path_table(rows),
        f"gateway / client tok/s: {rate:.2f} (target >= {TARGET_RATIO:.2f}: "
        f"{met(rate >= TARGET_RATIO)})",
        f"first token added by the gateway: {added:+.1f} ms median, job by job (target <= "
        f"{TARGET_GATEWAY_MS:.0f} ms: {met(added <= TARGET_GATEWAY_MS)})",
        concurrent,
        "",
        *versus_chat,
        reattached,
        *_versus_peers(api, peer_apis),
    )


def _versus_peers(api: PathResult, peers: list[PathResult | str]) -> list[str]:
    """The Responses stream of the peers that serve it beside genq's; a line for the others."""
    served = [p for p in peers if isinstance(p, PathResult)]
    rows = [(p, f"genq {api.tokens_per_s / p.tokens_per_s:.2f} x") for p in served]
    table = [report.path_table([(api, "1.00 x"), *rows])] if rows else []
    return [p for p in peers if isinstance(p, str)] + table


def sdk_run(sdk: openai.OpenAI, body: dict[str, Any]) -> Run:
    """One streamed completion of a request body (genq's and llama.cpp's own fields go as the
    SDK's extra body): clock from the request to the first text, then to the end. It must end
    by length (EOS is banned), with ignore_eos exactly that long. Tokens by the usage chunk
    where the server sends one, else one per chunk (llama_cpp.server streams one per event)."""
    extra = {k: v for k, v in body.items() if k not in {"model", "prompt", "stream"}}
    started = time.perf_counter()
    first: float | None = None
    finish, usage, pieces = None, None, 0
    for chunk in sdk.completions.create(
        model=body["model"], prompt=body["prompt"], stream=True, extra_body=extra
    ):
        for choice in chunk.choices:
            if first is None and choice.text:
                first = time.perf_counter()
            pieces += choice.finish_reason is None
            finish = choice.finish_reason or finish
        usage = chunk.usage.completion_tokens if chunk.usage else usage
    ended = time.perf_counter()
    if first is None or finish != "length":
        raise paths.BenchJobFailed(f"an SDK stream ended with {finish!r}, no text: {first}")
    tokens = pieces if usage is None else usage
    return paths.exact(Run(tokens, first - started, ended - first), body)


def _sdk(base_url: str) -> openai.OpenAI:
    import openai

    # The SDK wants a key; the gateway on loopback has none.
    return openai.OpenAI(
        base_url=f"{base_url}/v1", api_key="genq-bench", max_retries=0, timeout=SDK_TIMEOUT_S
    )


def _concurrent(gateway: Gateway, clients: int) -> str:
    """`clients` SSE streams at once from one gateway process; its CPU time over the burst."""
    process = psutil.Process(pid(gateway))  # uvicorn with one worker: this very process
    spec = JobSpec(model=report.BENCH_MODEL, prompt=report.DEFAULT_PROMPT, seed=1, ignore_eos=True)
    body = {**paths.request_body(spec, None, CONCURRENT_TOKENS), "window_tokens": CONCURRENT_TOKENS}
    before, started = cpu_s(process), time.perf_counter()
    counts = paths.at_once([functools.partial(_tokens, gateway.port, body)] * clients)
    wall, cpu = time.perf_counter() - started, cpu_s(process) - before
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
    except PEER_ERRORS:
        return 0


def _sdk_peers(
    path: Path, config: LlamaModelConfig, spec: JobSpec, eos: int, cache: Path, args: Any
) -> tuple[list[PathResult], list[PathResult | str]]:
    """The same SDK and job against llama_cpp.server and llama-server, one job at a time, as
    a completion, then on /v1/responses (or "not served"); EOS banned by a bias (they have no
    ignore_eos)."""
    if args.no_server:
        return [], []
    servers: list[LlamaServer] = []
    if missing_modules():
        say(f"llama_cpp.server skipped: {', '.join(missing_modules())} missing")
    else:
        servers.append(LlamaServer(path, config, cache / "gateway-llama_cpp.server.log"))
    if (binary := find()) is None:
        say("llama-server skipped: not built (`make llama-server`)")
    else:
        log = cache / "gateway-llama-server.log"
        servers.append(LlamaCppServer(path, config, log, binary=binary, parallel=1))
    body, results = paths.request_body(spec, eos, ban=report.BAN_BIAS), []
    apis: list[PathResult | str] = []
    for server in servers:  # a new SDK client per server, kept for its jobs, as the gateway's
        try:
            with serving(server), _sdk(f"http://{HOST}:{server.port}") as sdk:
                say(f"{server.name}: {server.command_line()}")
                sdk_run(sdk, {**body, "max_tokens": WARM_TOKENS})
                runs = [sdk_run(sdk, body) for _ in range(args.gateway_jobs)]
                apis.append(responses.peer(sdk, server.name, body, args.gateway_jobs))
        except PEER_ERRORS as exc:
            say(f"skipped {server.name}: {exc}")
            continue
        results.append(PathResult(f"openai SDK via {server.name}", runs))
    return results, apis


def remote(args: argparse.Namespace, cache: Path) -> None:
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
            with Path(stack.env["GENQ_MODELS_FILE"]).open("a") as registry:  # the worker reads it
                registry.write(
                    f'\n[models.{REMOTE_MODEL}]\nbackend = "remote"\nbase_url = '
                    f'"http://{HOST}:{server.port}/v1"\nwindow_tokens = {spec.max_tokens}\n'
                )
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
                    _one_by_one, REMOTE, lambda: paths.stream_genq(client, spec), n
                )
                _compare(direct, genq, args.remote_rounds, tokens)
                slots = args.remote_concurrent_jobs
                _worker(stack, client, spec, slots)
                say(f"\n{slots} jobs at once per path; genq: 1 worker process with --slots {slots}")
                direct = functools.partial(paths.server_batch, DIRECT, port, [body] * slots)
                genq = functools.partial(paths.genq_batch, REMOTE, client, [spec] * slots)
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
    pause = REMOTE_SETTLE_S
    done = report.alternate(report.paused(pause, direct), report.paused(pause, genq), rounds)
    ratios = [g.tokens_per_s / d.tokens_per_s for d, g in done]
    for n, (d, g) in enumerate(done):
        say(f"  round {n + 1}: {_pass(d)}, {_pass(g)}; genq / direct {ratios[n]:.3f}")
    sides = [d for d, _ in done], [g for _, g in done]
    rate = [sum(b.tokens for b in side) / sum(b.wall_s for b in side) for side in sides]
    rows = [_row(side) for side in sides]
    header = ("path", "tok/s all in", "first token ms", "tok/s per job", "wall s")
    say(report.table(header, rows))
    runs = [run for _, g in done for run in g.runs]
    exact = sum(run.tokens == tokens for run in runs)
    ratio, pooled = statistics.median(ratios), rate[1] / rate[0]  # tokens over summed walls
    added = statistics.median(g.first_token_ms - d.first_token_ms for d, g in done)
    say(
        f"genq jobs with exactly {tokens} tokens: {exact}/{len(runs)} ({met(exact == len(runs))})",
        f"genq / direct tok/s: median {ratio:.3f} over {rounds} rounds (range {min(ratios):.3f}"
        f"..{max(ratios):.3f}; target >= {REMOTE_RATIO:.2f}: {met(ratio >= REMOTE_RATIO)}); "
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
