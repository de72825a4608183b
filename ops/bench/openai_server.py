"""What a user would run instead: llama-cpp-python's OpenAI-compatible server on loopback,
the same job streamed over SSE from /v1/completions, read with the stdlib only."""

from __future__ import annotations

import http.client
import importlib.util
import json
import math
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from common.registry import LlamaModelConfig
from ops.bench.measure import PathResult, Run
from ops.bench.workload import Workload
from ops.localstack import StackError, free_port, stop_process, wait_for

NAME = "llama_cpp.server SSE"
HOST = "127.0.0.1"
READY_TIMEOUT_S = 60.0
PROBE_TIMEOUT_S = 1.0
REQUEST_TIMEOUT_S = 120.0
BUDGET_S = 90.0  # longest a measured server job may run before it is cut off
# What `llama-cpp-python[server]` adds; without them the server cannot start.
SERVER_MODULES = ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")


class ServerError(RuntimeError):
    """The server answered a completion request with an error or an odd stream."""


def missing_modules() -> list[str]:
    return [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]


@dataclass
class LlamaServer:
    """`python -m llama_cpp.server` as a subprocess in its own process group, loaded with the
    worker's model options; ready once /v1/models answers."""

    model: Path
    config: LlamaModelConfig
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        opts = {
            "model": str(self.model),
            "n_ctx": self.config.n_ctx,
            "n_batch": self.config.n_batch,
            "n_gpu_layers": self.config.n_gpu_layers,
            "n_threads": self.config.n_threads,
            "host": HOST,
            "port": self.port,
            "verbose": "false",  # the worker loads with verbose=False too
        }
        args = [f"--{name}={value}" for name, value in opts.items() if value is not None]
        return [sys.executable, "-m", "llama_cpp.server", *args]

    def command_line(self) -> str:
        """The command, shortened for printing (the model path lives in a temporary dir)."""
        args = self.command()[1:]
        return "python " + " ".join(a for a in args if not a.startswith("--model="))

    def start(self) -> LlamaServer:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(self._ready, READY_TIMEOUT_S, f"llama_cpp.server (log: {self.log})")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise StackError(f"llama_cpp.server exited with {self.proc.returncode}")
        url = f"http://{HOST}:{self.port}/v1/models"
        try:
            with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, group=True)
            self.proc = None


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


def _events(resp: http.client.HTTPResponse) -> Iterator[bytes]:
    """SSE `data:` payloads up to `[DONE]`."""
    for raw in resp:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line.removeprefix(b"data:").strip()
        if data == b"[DONE]":
            return
        yield data


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
        for data in _events(resp):
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
