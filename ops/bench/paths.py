"""The ways one job runs, each timed as a reader sees it (ops/bench/report.py's `Run`):

- in process: llama-cpp-python alone (`Llama.generate()`, a fresh context each job), the
  ceiling with no queue around it;
- genq: `Client.submit`, then the job's stream (producer -> Celery -> worker -> pub/sub ->
  relay -> Redis Stream -> reader);
- an OpenAI-compatible server (llama_cpp.server, llama-server, `genq serve`): the same job
  streamed over SSE from /v1/completions with the stdlib only.
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

from genq import Client, JobHandle, JobSpec
from genq.common.registry import LlamaModelConfig
from ops.bench.report import Batch, Run
from ops.llamaserver import HOST

T = TypeVar("T")
JSON = {"Content-Type": "application/json"}

INPROCESS = "in-process (llama-cpp-python's Llama)"
GENQ = "genq end to end"
STREAM_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 120.0
LOAD_OPTIONS = {"n_ctx", "n_batch", "n_threads", "n_gpu_layers"}
BUDGET_S = 90.0  # longest a measured server job may run before it is cut off


class BenchJobFailed(RuntimeError):
    """A benchmark job ended with an error or fewer tokens than asked."""


class ServerError(RuntimeError):
    """A server answered a completion request with an error or an odd stream."""


def prompt_tokens(vocab: Llama, prompt: str) -> list[int]:
    return vocab.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)


def non_utf8_tokens(vocab: Llama) -> list[int]:
    """Tokens whose bytes are not valid UTF-8 on their own (the tiny model's stray bytes)."""
    banned = []
    for token in range(vocab.n_vocab()):
        try:
            vocab.detokenize([token]).decode("utf-8")
        except UnicodeDecodeError:
            banned.append(token)
    return banned


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


def generate(llm: Llama, spec: JobSpec) -> Run:
    """`spec.max_tokens` tokens from a fresh context, timed from the call (prompt evaluation
    included); the job's sampling parameters, whatever it samples (EOS included)."""
    started = time.perf_counter()
    llm.reset()  # type: ignore[no-untyped-call]  # no prompt prefix kept from the last job: each evaluates its prompt
    llm.set_seed(spec.seed or 0)
    made, first = 0, started
    for _ in llm.generate(
        prompt_tokens(llm, spec.prompt or ""),
        top_k=spec.top_k,
        top_p=spec.top_p,
        min_p=spec.min_p,
        temp=spec.temperature,
        repeat_penalty=spec.repeat_penalty,
    ):
        first = time.perf_counter() if not made else first
        made += 1
        if made == spec.max_tokens:
            break
    return Run(made, first - started, time.perf_counter() - first)


def stream_genq(client: Client, spec: JobSpec) -> Run:
    """Clock from before submit (the queue's cost is in first-token latency) to the done
    frame."""
    started = time.perf_counter()
    return read_genq(client.submit(spec), started)


def read_genq(job: JobHandle, started: float) -> Run:
    """A submitted job's stream, clocked from `started`; tokens counted by the frames'
    `count` (a remote model's frames have no ids)."""
    first: float | None = None
    tokens = 0
    with job.stream(timeout=STREAM_TIMEOUT_S) as stream:
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


def exact_genq(client: Client, spec: JobSpec) -> Run:
    """A genq job that must come out exactly `spec.max_tokens` tokens long."""
    run = stream_genq(client, spec)
    if run.tokens != spec.max_tokens:
        raise BenchJobFailed(f"a genq job made {run.tokens} tokens, not {spec.max_tokens}")
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


def request_body(spec: JobSpec, eos: int | None, tokens: int | None = None) -> dict[str, Any]:
    """`spec` as an OpenAI completion request. llama_cpp.server has no ignore_eos: `eos` gets
    a bias of -inf (json.dumps writes -Infinity, which its Python parser reads); without
    `eos`, ignore_eos (llama-server's, whose parser rejects -Infinity)."""
    bias: dict[str, Any] = {str(k): v for k, v in spec.logit_bias.items()}
    body = {
        "prompt": spec.prompt,
        "max_tokens": tokens or spec.max_tokens,
        "stream": True,
        "temperature": spec.temperature,
        "top_p": spec.top_p,
        "top_k": spec.top_k,
        "min_p": spec.min_p,
        "repeat_penalty": spec.repeat_penalty,
        "seed": spec.seed,
        "logit_bias": bias,
    }
    if eos is None:
        body["ignore_eos"] = True
    else:
        bias[str(eos)] = -math.inf
    return body


def sse_data(resp: http.client.HTTPResponse) -> Iterator[bytes]:
    """An OpenAI-style SSE stream's `data:` payloads, up to `[DONE]`."""
    for raw in resp:
        line = raw.strip()
        if line.startswith(b"data:"):
            data = line.removeprefix(b"data:").strip()
            if data == b"[DONE]":
                return
            yield data


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
    conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
    try:
        started = time.perf_counter()
        conn.request("POST", "/v1/completions", json.dumps(body), JSON)
        resp = conn.getresponse()
        if resp.status != 200:
            raise ServerError(f"HTTP {resp.status}: {resp.read(500)!r}")
        reading = _Reading()
        for data in sse_data(resp):
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
