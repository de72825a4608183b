"""What a user would run instead: llama-cpp-python's OpenAI-compatible server on loopback,
the same job streamed over SSE from /v1/completions, read with the stdlib only."""

from __future__ import annotations

import http.client
import json
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

from genq.workers.backends.remote import sse_data
from ops.bench.measure import PathResult, Run
from ops.bench.workload import Workload
from ops.llamaserver import HOST, LlamaServer, missing_modules

__all__ = ["NAME", "LlamaServer", "ServerError", "measure", "missing_modules", "run_once"]

NAME = "llama_cpp.server SSE"
REQUEST_TIMEOUT_S = 120.0
BUDGET_S = 90.0  # longest a measured server job may run before it is cut off


class ServerError(RuntimeError):
    """The server answered a completion request with an error or an odd stream."""


def request_body(workload: Workload, eos: int) -> bytes:
    spec = workload.spec
    body = {
        "prompt": spec.prompt,
        "max_tokens": workload.tokens,
        "stream": True,
        "temperature": spec.temperature,
        "top_p": spec.top_p,
        "top_k": spec.top_k,
        "min_p": spec.min_p,
        "repeat_penalty": spec.repeat_penalty,
        "seed": spec.seed,
        # EOS at -inf, as the worker's ignore_eos. json.dumps writes -Infinity, which the
        # server's parser (Python's json) reads; strict JSON has no infinity.
        "logit_bias": {**{str(k): v for k, v in spec.logit_bias.items()}, str(eos): -math.inf},
    }
    return json.dumps(body).encode("utf-8")


@dataclass
class _Reading:
    first: float | None = None
    tokens: int = 0
    finish: str | None = None
    text: list[str] = field(default_factory=list)

    def add(self, event: dict[str, Any]) -> None:
        choice = event["choices"][0]
        if choice.get("finish_reason") is not None:
            self.finish = choice["finish_reason"]
            return
        # llama-cpp-python sends one event per sampled token (text may be empty while a
        # UTF-8 character is incomplete), then one with the finish reason.
        self.first = time.perf_counter() if self.first is None else self.first
        self.tokens += 1
        self.text.append(choice.get("text") or "")


def run_once(port: int, body: bytes, budget_s: float = BUDGET_S) -> tuple[Run, str]:
    """A new connection per job, as a client would open; clock from request to [DONE], or
    to `budget_s` for a job that would run for minutes (the run then counts what arrived)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
    try:
        started = time.perf_counter()
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise ServerError(f"HTTP {resp.status}: {resp.read(500)!r}")
        reading = _Reading()
        for data in sse_data(resp):
            reading.add(json.loads(data))
            if time.perf_counter() - started > budget_s:
                reading.finish = "budget"
                break
        ended = time.perf_counter()
    finally:
        conn.close()
    if reading.first is None or reading.finish not in {"length", "budget"}:
        raise ServerError(f"{reading.tokens} tokens, finish reason {reading.finish!r}")
    run = Run(reading.tokens, reading.first - started, ended - reading.first)
    return run, "".join(reading.text)


def measure(port: int, workload: Workload, eos: int, jobs: int) -> PathResult:
    """A short job warms the server's graph first; its cost grows with output length."""
    warm = workload.spec.model_copy(update={"max_tokens": 16})
    run_once(port, request_body(replace(workload, spec=warm), eos))
    body = request_body(workload, eos)
    return PathResult(NAME, [run_once(port, body)[0] for _ in range(jobs)])
