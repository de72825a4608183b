"""llama.cpp's own continuous batching as the peer of genq's: `llama-server -np N` on
loopback, loaded with the worker's model options (threads, n_batch, n_ctx per slot), and N
clients streaming /v1/completions over SSE at once (stdlib only), each with a seed of its own
and EOS ignored, so that every client gets exactly `max_tokens` tokens.

Aggregate tok/s is every client's completion tokens over the wall time from the first
request to the last stream's end; each client's first-token latency counts from its own
request. The server is stopped on the way out, Ctrl-C included.

    python -m ops.bench.llama_server_peer --clients 8 --max-tokens 100
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from genq import GenqError, JobSpec, Settings
from genq.common.registry import ModelRegistry
from ops.bench import llama_server_bin
from ops.bench.paths import REQUEST_TIMEOUT_S, ServerError, sse_data
from ops.bench.report import DEFAULT_PROMPT, DEFAULT_SEED, MS_PER_S, Run, default_model, job_model
from ops.bench.stack import print_tail
from ops.llamaserver import HOST, LlamaServer
from ops.localstack import StackError

__all__ = ["LlamaCppServer", "PeerResult", "measure", "request_body", "run_peer", "sampling"]

NAME = "llama-server"
DEFAULT_CLIENTS = 8
DEFAULT_MAX_TOKENS = 100
WARM_TOKENS = 8  # one short request before the clients: the first request's one-off costs


@dataclass(kw_only=True)
class LlamaCppServer(LlamaServer):
    """`llama-server` as a subprocess in its own process group; `parallel` slots of the
    worker's n_ctx each; ready once /health answers 200 (503 while the model loads)."""

    binary: Path
    parallel: int = DEFAULT_CLIENTS
    name: ClassVar[str] = NAME
    ready_path: ClassVar[str] = "/health"

    def command(self) -> list[str]:
        opts = {
            "-m": self.model,
            "-np": self.parallel,
            "-c": self.parallel * self.config.n_ctx,  # the context is shared by the slots
            "-t": self.config.n_threads or os.cpu_count() or 1,  # the worker's default: all
            "-b": self.config.n_batch,
            "-ngl": self.config.n_gpu_layers,
            "--host": HOST,
            "--port": self.port,
        }
        return [str(self.binary), *(str(a) for opt in opts.items() for a in opt)]

    def command_line(self) -> str:
        """The command without the binary's and the model's paths."""
        args = self.command()[1:]
        return " ".join([NAME, *args[2:]])


@dataclass(frozen=True)
class PeerResult:
    """One run of `len(runs)` clients at once; `wall_s` from the first request to the last
    stream's end."""

    command: str
    runs: list[Run]
    wall_s: float

    @property
    def tokens(self) -> int:
        return sum(run.tokens for run in self.runs)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s

    @property
    def first_token_ms(self) -> list[float]:
        return [run.first_token_s * MS_PER_S for run in self.runs]

    def describe(self) -> str:
        ttft = self.first_token_ms
        return (
            f"{NAME}: {len(self.runs)} clients, {self.tokens} tokens in {self.wall_s:.2f} s: "
            f"{self.tokens_per_s:,.1f} tok/s aggregate; first token (ms) median "
            f"{statistics.median(ttft):.0f}, min {min(ttft):.0f}, max {max(ttft):.0f}: "
            + ", ".join(f"{ms:.0f}" for ms in ttft)
        )


def sampling(spec: JobSpec) -> dict[str, Any]:
    """A genq job's sampling parameters, by the names llama-server reads."""
    return spec.model_dump(include={"temperature", "top_p", "top_k", "min_p", "repeat_penalty"})


def request_body(
    prompt: str, max_tokens: int, seed: int, params: Mapping[str, Any] | None = None
) -> bytes:
    body = {
        **(params or {}),
        "prompt": prompt,
        "max_tokens": max_tokens,
        "stream": True,
        "ignore_eos": True,
        "seed": seed,
    }
    return json.dumps(body).encode("utf-8")


@dataclass
class _Stream:
    """One client's clock readings (perf_counter) and what it received, or what failed."""

    started: float = 0.0
    first: float | None = None
    ended: float = 0.0
    events: int = 0
    usage_tokens: int | None = None
    finish: str | None = None
    error: BaseException | None = None

    def add(self, event: dict[str, Any]) -> None:
        if "error" in event:
            raise ServerError(f"the server sent an error: {event['error']}")
        usage = event.get("usage") or {}
        self.usage_tokens = usage.get("completion_tokens", self.usage_tokens)
        choices = event.get("choices") or [{}]
        if choices[0].get("finish_reason") is not None:
            self.finish = choices[0]["finish_reason"]
        if choices[0].get("text"):
            self.first = time.perf_counter() if self.first is None else self.first
            self.events += 1

    def run(self) -> Run:
        """The server's own count where it sends one: an event may carry several tokens."""
        if self.first is None or self.finish != "length":
            raise ServerError(f"{self.events} text events, finish reason {self.finish!r}")
        tokens = self.usage_tokens if self.usage_tokens is not None else self.events
        return Run(tokens, self.first - self.started, self.ended - self.first)


def _stream(port: int, body: bytes, reading: _Stream) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
    try:
        reading.started = time.perf_counter()
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise ServerError(f"HTTP {resp.status}: {resp.read(500)!r}")
        for data in sse_data(resp):
            reading.add(json.loads(data))
        reading.ended = time.perf_counter()
    finally:
        conn.close()


def _client(port: int, body: bytes, gate: threading.Barrier, reading: _Stream) -> None:
    """A thread's whole life; what fails is kept for the main thread to raise."""
    try:
        gate.wait()
        _stream(port, body, reading)
    except BaseException as exc:  # re-raised by measure(), in the main thread
        reading.error = exc


def measure(port: int, bodies: Sequence[bytes]) -> tuple[list[Run], float]:
    """One client thread per body, released together; their runs and the wall time.
    Daemon threads: on Ctrl-C the caller stops the server, which ends their streams."""
    readings = [_Stream() for _ in bodies]
    gate = threading.Barrier(len(bodies))
    threads = [
        threading.Thread(target=_client, args=(port, body, gate, reading), daemon=True)
        for body, reading in zip(bodies, readings, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for n, reading in enumerate(readings):
        if reading.error is not None:
            raise ServerError(f"client {n}: {reading.error}") from reading.error
    runs = [reading.run() for reading in readings]
    wall_s = max(r.ended for r in readings) - min(r.started for r in readings)
    return runs, wall_s


@contextmanager
def running(server: LlamaCppServer) -> Iterator[LlamaCppServer]:
    """Started, and stopped however the block ends; the server's last words if it fails."""
    try:
        yield server.start()
    except Exception:
        print_tail(server.log)
        raise
    finally:
        server.stop()


@dataclass(frozen=True)
class PeerJob:
    """What every client is asked: client n streams prompts[n % len(prompts)] with seed
    `seed + n`, `max_tokens` tokens, `params` (sampling) besides."""

    prompts: Sequence[str]
    max_tokens: int = DEFAULT_MAX_TOKENS
    seed: int = DEFAULT_SEED
    params: Mapping[str, Any] = field(default_factory=dict)

    def bodies(self, clients: int) -> list[bytes]:
        return [
            request_body(
                self.prompts[n % len(self.prompts)], self.max_tokens, self.seed + n, self.params
            )
            for n in range(clients)
        ]


def run_peer(server: LlamaCppServer, job: PeerJob) -> PeerResult:
    """The server started, warmed by one short request, measured with one client per slot,
    and stopped."""
    with running(server):
        warm = request_body(job.prompts[0], WARM_TOKENS, job.seed, job.params)
        measure(server.port, [warm])
        runs, wall_s = measure(server.port, job.bodies(server.parallel))
    return PeerResult(server.command_line(), runs, wall_s)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ops.bench.llama_server_peer",
        description="llama.cpp's llama-server -np N with N concurrent streaming clients",
    )
    parser.add_argument("--model", default=default_model(), help="registry model (%(default)s)")
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS, help="and slots (-np)")
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument("--prompt", action="append", help=f"repeatable ({DEFAULT_PROMPT!r})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="client n's: seed + n")
    parser.add_argument("--log", type=Path, help="the server's log (default: a temporary file)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.clients < 1 or args.max_tokens < 1:
        print("error: --clients and --max-tokens must be at least 1", file=sys.stderr)
        return 2
    # As every process of `python -m ops.bench` (see ops/bench/__init__.py): spinning OpenMP
    # threads on a machine without a core to spare made the server's steps ~3x slower here.
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    try:
        print(_run(args).describe())
    except KeyboardInterrupt:  # the server is stopped by then
        return 130
    except (GenqError, StackError, ServerError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _run(args: argparse.Namespace) -> PeerResult:
    binary = llama_server_bin.find()
    if binary is None:
        raise llama_server_bin.LlamaServerNotFound("no llama-server: run `make llama-server`")
    registry = ModelRegistry.from_settings(Settings())
    name = job_model(args.model)
    prompts = args.prompt or [DEFAULT_PROMPT]
    spec = JobSpec(model=name, prompt=prompts[0])
    job = PeerJob(prompts, args.max_tokens, args.seed, sampling(spec))
    log = args.log or Path(tempfile.gettempdir()) / f"genq-llama-server-{os.getpid()}.log"
    server = LlamaCppServer(
        registry.local_path(name), registry.llama(name), log, binary=binary, parallel=args.clients
    )
    print(f"{server.command_line()} (log: {log})", flush=True)
    return run_peer(server, job)


if __name__ == "__main__":
    sys.exit(main())
