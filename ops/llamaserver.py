"""llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`) and llama.cpp's
own `llama-server` (ops/llamaserver_build.py finds or builds it) on loopback, as subprocesses:
the remote model of genq's tests, and the baselines of its benchmarks."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Self

from genq.common import ggufmeta
from genq.common.registry import LlamaModelConfig
from ops.localstack import StackError, free_port, stop_process, wait_for

HOST = "127.0.0.1"
READY_TIMEOUT_S = 60.0
PROBE_TIMEOUT_S = 1.0
# What `llama-cpp-python[server]` adds; without them the server cannot start.
SERVER_MODULES = ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")


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
    # What messages call it, and what answers 200 once it is ready (LlamaCppServer's differ).
    name: ClassVar[str] = "llama_cpp.server"
    ready_path: ClassVar[str] = "/v1/models"

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
            # Concurrent streams wait their turn (the server runs one at a time) instead of
            # the newest cutting off the one in progress, llama_cpp.server's default.
            "interrupt_requests": "false",
        }
        args = [f"--{name}={value}" for name, value in opts.items() if value is not None]
        return [sys.executable, "-m", "llama_cpp.server", *args]

    def command_line(self) -> str:
        """The command, shortened for printing (the model path lives in a temporary dir)."""
        args = self.command()[1:]
        return "python " + " ".join(a for a in args if not a.startswith("--model="))

    def start(self) -> Self:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(self._ready, READY_TIMEOUT_S, f"{self.name} (log: {self.log})")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise StackError(f"{self.name} exited with {self.proc.returncode}")
        url = f"http://{HOST}:{self.port}{self.ready_path}"
        try:
            with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, group=True)
            self.proc = None


@dataclass(kw_only=True)
class LlamaCppServer(LlamaServer):
    """llama.cpp's `llama-server` with `parallel` slots of the worker's n_ctx each; ready once
    /health answers 200 (503 while the model loads)."""

    binary: Path
    parallel: int = 1
    name: ClassVar[str] = "llama-server"
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
            **self._context_override(),
        }
        return [str(self.binary), *(str(a) for opt in opts.items() for a in opt)]

    def _context_override(self) -> dict[str, str]:
        """llama-server caps a slot's context at the model's training context (the tiny
        model's is 256), where llama-cpp-python, the worker, runs the n_ctx it is given: the
        file's value is overridden, so that the peer runs the worker's jobs whole."""
        trained = ggufmeta.training_context(self.model)
        if trained is None or trained.length >= self.config.n_ctx:
            return {}
        return {"--override-kv": f"{trained.key}=int:{self.config.n_ctx}"}

    def command_line(self) -> str:
        """The command without the binary's and the model's paths."""
        return " ".join([self.name, *self.command()[3:]])
