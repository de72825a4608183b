"""The ways one job runs, each timed as a reader sees it (ops/bench/report.py's `Run`): in
process with llama-cpp-python alone (`Llama.generate()`, a fresh context each job), the
ceiling with no queue around it; genq (`Client.submit`, then the job's stream); and an
OpenAI-compatible server (llama_cpp.server, llama-server, `genq serve`) streaming the same job
over SSE from /v1/completions, read with the stdlib only.
"""

from __future__ import annotations

import functools
import http.client
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from llama_cpp import Llama

from genq import Client, JobHandle, JobSpec, PromptTooLong
from genq.common.registry import LlamaModelConfig
from ops.bench.report import BAN_BIAS, Batch, Run
from ops.llamaserver import HOST

T = TypeVar("T")
JSON = {"Content-Type": "application/json"}
INPROCESS = "in-process (llama-cpp-python's Llama)"
GENQ = "genq end to end"
TIMEOUT_S = 120.0  # a genq stream's, or a request's
LOAD_OPTIONS = {"n_ctx", "n_batch", "n_threads", "n_gpu_layers"}
SAMPLING = {"temperature", "top_p", "top_k", "min_p", "repeat_penalty"}
BUDGET_S = 90.0  # longest a measured server job may run before it is cut off


class BenchJobFailed(RuntimeError):
    """A benchmark job ended with an error or fewer tokens than asked."""


class ServerError(RuntimeError):
    """A server answered a completion request with an error or an odd stream."""


def prompt_tokens(vocab: Llama, prompt: str) -> list[int]:
    return vocab.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)


@contextmanager
def loaded(path: Path, config: LlamaModelConfig | None = None) -> Iterator[Llama]:
    """The model loaded by llama-cpp-python with the registry entry's options; without them,
    its vocabulary alone (tokenize, detokenize, EOS)."""
    options: dict[str, Any] = {} if config is None else config.model_dump(include=LOAD_OPTIONS)
    options["n_threads_batch"] = options.get("n_threads")
    llm = Llama(str(path), vocab_only=config is None, verbose=False, **options)
    try:
        yield llm
    finally:
        llm.close()


def workload(
    job: JobSpec, path: Path, n_ctx: int, stray: bool, eos: bool
) -> tuple[JobSpec, str, int]:
    """The largest job of at most `job.max_tokens` that fits one context, run by genq as one
    window (its default window would split it: another prompt evaluation), its description
    and the model's EOS id. Every path bans the same tokens by the same bias: where `stray`,
    those whose bytes are not valid UTF-8 alone (with them a server holds text back and
    re-decodes it, quadratically); EOS by it where `eos` (a server with no ignore_eos)."""
    with loaded(path) as vocab:
        count, eos_id = len(prompt_tokens(vocab, job.prompt or "")), vocab.token_eos()
        pieces = [vocab.detokenize([t]) for t in range(vocab.n_vocab() if stray else 0)]
        banned = [t for t, piece in enumerate(pieces) if "\ufffd" in piece.decode(errors="replace")]
    banned += [eos_id] if eos else []
    size, asked = min(job.max_tokens, n_ctx - count), job.max_tokens
    if size < 2:
        raise PromptTooLong(f"a {count}-token prompt leaves no room in n_ctx {n_ctx}")
    bias = dict.fromkeys(banned, BAN_BIAS)
    update = {"max_tokens": size, "window_tokens": size, "ignore_eos": not eos, "logit_bias": bias}
    spec = job.model_copy(update=update)
    described = (
        f"job: {size} tokens{'' if size == asked else f' (asked {asked})'} after a {count}-token "
        f"prompt, one window in genq; temperature {spec.temperature}, top_k {spec.top_k}, "
        f"top_p {spec.top_p}, min_p {spec.min_p}, seed {spec.seed}, EOS banned"
        + (f", {len(banned)} tokens banned" if banned else "")
    )
    return spec, described, eos_id


def generate(llm: Llama, spec: JobSpec) -> Run:
    """`spec.max_tokens` tokens from a fresh context, timed from the call (prompt evaluation
    included); the job's sampling parameters, whatever it samples (EOS included)."""
    sampling = spec.model_dump(include={"top_k", "top_p", "min_p", "repeat_penalty"})
    started = time.perf_counter()
    llm.reset()  # type: ignore[no-untyped-call]  # no prompt prefix kept from the last job: each evaluates its prompt
    llm.set_seed(spec.seed or 0)
    made, first = 0, started
    tokens = prompt_tokens(llm, spec.prompt or "")
    for _ in llm.generate(tokens, temp=spec.temperature, **sampling):
        first = time.perf_counter() if not made else first
        made += 1
        if made == spec.max_tokens:
            break
    return Run(made, first - started, time.perf_counter() - first)


def stream_genq(client: Client, spec: JobSpec) -> Run:
    """Clock from before submit (the queue's cost is in first-token latency) to the done
    frame; with ignore_eos, exactly `max_tokens` long."""
    started = time.perf_counter()
    return exact(read_genq(client.submit(spec), started), spec.model_dump())


def read_genq(job: JobHandle, started: float) -> Run:
    """A submitted job's stream, clocked from `started`; tokens counted by the frames'
    `count` (a remote model's frames have no ids)."""
    first: float | None = None
    tokens = 0
    with job.stream(timeout=TIMEOUT_S) as stream:
        for frame in stream:
            if frame.type == "token":
                first = time.perf_counter() if first is None else first
                tokens += frame.data.count  # type: ignore[union-attr]
            elif frame.type == "error":
                raise BenchJobFailed(f"job {job.job_id}: {frame.data}")
    ended = time.perf_counter()
    if first is None:
        raise BenchJobFailed(f"job {job.job_id}: no token arrived")
    return Run(tokens, first - started, ended - first)


def exact(run: Run, job: dict[str, Any]) -> Run:
    """The run of a job (its fields) that ignores EOS: exactly `max_tokens` long."""
    if job.get("ignore_eos") and run.tokens != job["max_tokens"]:
        raise BenchJobFailed(f"a job made {run.tokens} tokens, not {job['max_tokens']}")
    return run


def genq_batch(name: str, client: Client, specs: Sequence[JobSpec]) -> Batch:
    """The jobs submitted one after another, their streams read at once, a thread each."""
    started = time.perf_counter()
    handles = [client.submit(spec) for spec in specs]
    runs = at_once([functools.partial(read_genq, job, started) for job in handles])
    return Batch(name, runs, time.perf_counter() - started)


def at_once(calls: Sequence[Callable[[], T]]) -> list[T]:
    """The calls made together, a thread each; their results in order."""
    pool = ThreadPoolExecutor(len(calls))
    try:
        return [future.result() for future in [pool.submit(call) for call in calls]]
    finally:  # on Ctrl-C the caller stops the server, which ends the streams left
        pool.shutdown(wait=False, cancel_futures=True)


def request_body(
    spec: JobSpec, eos: int | None, tokens: int | None = None, ban: float = -math.inf
) -> dict[str, Any]:
    """`spec` as an OpenAI completion request. llama_cpp.server has no ignore_eos: `eos` gets
    the bias `ban` (json.dumps writes -inf as -Infinity, which its Python parser reads; the
    openai SDK's JSON refuses it); without `eos`, ignore_eos (llama-server's and genq's)."""
    bias = {str(k): v for k, v in spec.logit_bias.items()}
    body = spec.model_dump(include={"model", "prompt", "seed", *SAMPLING})
    body |= {"max_tokens": tokens or spec.max_tokens, "stream": True}
    body["stream_options"] = {"include_usage": True}  # llama_cpp.server ignores it
    body["logit_bias"] = bias if eos is None else {**bias, str(eos): ban}
    return body if eos is not None else {**body, "ignore_eos": True}


@dataclass
class _Reading:
    first: float | None = None
    events: int = 0
    usage: int | None = None
    finish: str | None = None

    def add(self, event: dict[str, Any]) -> None:
        if "error" in event:
            raise ServerError(f"the server sent an error: {event['error']}")
        self.usage = (event.get("usage") or {}).get("completion_tokens", self.usage)
        choice = (event.get("choices") or [{}])[0]
        if choice.get("finish_reason") is not None:
            self.finish = choice["finish_reason"]
        elif choice:  # an event per token (its text may be empty inside a UTF-8 character)
            self.first = time.perf_counter() if self.first is None else self.first
            self.events += 1


def stream_sse(port: int, body: dict[str, Any]) -> Run:
    """A new connection per job, as a client opens one; clock from the request to [DONE], or
    to BUDGET_S for a job that would run for minutes (the run then counts what arrived).
    Tokens by the server's usage where it sends one, else an event each."""
    conn = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT_S)
    try:
        started = time.perf_counter()
        conn.request("POST", "/v1/completions", json.dumps(body), JSON)
        resp = conn.getresponse()
        if resp.status != 200:
            raise ServerError(f"HTTP {resp.status}: {resp.read(500)!r}")
        reading = _Reading()
        for raw in resp:
            data = raw.strip().removeprefix(b"data:").strip()
            if data == b"[DONE]":
                break
            if data and raw.startswith(b"data:"):
                reading.add(json.loads(data))
            if time.perf_counter() - started > BUDGET_S:
                reading.finish = "budget"
                break
        ended = time.perf_counter()
    finally:
        conn.close()
    if reading.first is None or reading.finish not in {"length", "budget"}:
        raise ServerError(f"{reading.events} tokens, finish reason {reading.finish!r}")
    tokens = reading.events if reading.usage is None else reading.usage
    return Run(tokens, reading.first - started, ended - reading.first)


def server_batch(name: str, port: int, bodies: Sequence[dict[str, Any]]) -> Batch:
    """A client per body streaming at once."""
    started = time.perf_counter()
    runs = at_once([functools.partial(stream_sse, port, body) for body in bodies])
    return Batch(name, runs, time.perf_counter() - started)
