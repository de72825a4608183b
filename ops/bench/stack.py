"""A private genq stack per section, started as a user starts one (ops/localstack.py), its
registry and logs in the run's temporary directory, and the benchmark's own processes; all
stopped on the way out, Ctrl-C included, and swept by a marker in their environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

from genq import Settings
from genq.common.registry import LlamaModelConfig, ModelRegistry
from genq.common.tinymodel import ensure_tiny_model
from ops.bench.report import BENCH_MODEL, BENCH_N_CTX
from ops.llamaserver import LlamaServer
from ops.localstack import GenqProcess, RedisServer, Relay, StackError, Worker, settings_for

S = TypeVar("S", bound=GenqProcess | LlamaServer)
LOG_TAIL_LINES = 30
MARKER = "OPS_BENCH_RUN"  # in the environment of every process a run starts
GRACE_S = 5.0


@dataclass
class Stack:
    """What one section runs against; `env` is what every genq process of it is given."""

    env: dict[str, str]
    cache: Path
    redis: RedisServer
    relay: Relay | None = None
    workers: list[Worker] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return settings_for(self.env)

    def start_worker(self, name: str = "bench") -> Worker:
        """`genq worker -n name@%h`; replaces a stopped one of that name."""
        self.workers = [w for w in self.workers if w.name != name]
        self.workers.append(Worker(self.env, self.cache / f"worker-{name}.log", name=name))
        return self.workers[-1].start()

    def child(self, args: Sequence[str], log: str, ready: str = "", stdin: bool = False) -> Child:
        """`python -m ops.bench.child args`, not started, its output in `<log>.log`."""
        path = self.cache / f"{log}.log"
        path.unlink(missing_ok=True)  # a fresh log: its ready line and JSON are this run's
        return Child(
            self.env, path, stdin=subprocess.PIPE if stdin else None, args=args, ready=ready
        )

    def model(self, name: str) -> tuple[Path, LlamaModelConfig]:
        """A registry model's file and options, as the stack's workers read them."""
        registry = ModelRegistry.from_settings(self.settings)
        return registry.local_path(name), registry.llama(name)

    def worker(self, name: str) -> Worker:
        return next(w for w in self.workers if w.name == name)

    def processes(self) -> list[GenqProcess]:
        return [*self.workers, *([self.relay] if self.relay is not None else [])]

    def check_alive(self) -> None:
        """StackError naming a genq process of it that has exited."""
        for proc in self.processes():
            if proc.proc is not None and proc.proc.poll() is not None:
                print_tail(proc.log)
                raise StackError(f"{proc.what} exited with {proc.proc.returncode} during the run")


def pid(proc: GenqProcess | RedisServer | None) -> int:
    if proc is None or proc.proc is None:
        raise StackError("a process of the stack is not running")
    return proc.proc.pid


@contextmanager
def cache_dir() -> Iterator[Path]:
    """The run's temporary directory; every process started inside carries its marker, and
    any still running on the way out (a Popen a Ctrl-C interrupted) is stopped by pid."""
    with tempfile.TemporaryDirectory(prefix="genq-bench-") as path:
        os.environ[MARKER] = path
        try:
            yield Path(path)
        finally:
            _stop_strays(path)
            os.environ.pop(MARKER, None)


@contextmanager
def local_stack(
    cache: Path, overrides: Mapping[str, str], workers: int = 1, relay: bool = True
) -> Iterator[Stack]:
    """redis-server, then the relay, then `workers` workers named bench, bench2, ...
    `overrides`: extra GENQ_* variables for every process (and this process's Settings)."""
    server = RedisServer()
    env = {
        "GENQ_REDIS_URL": server.url,
        "GENQ_CACHE_DIR": str(Settings().cache_dir),
        "GENQ_MODELS_FILE": str(_registry(cache)),
        "GENQ_METRICS_PORT": "0",  # a section's several workers would contend for one port
        "GENQ_RELAY_METRICS_PORT": "0",
        **overrides,
    }
    stack = Stack(env, cache, server)
    try:
        server.start()
        if relay:
            stack.relay = Relay(env, cache / "relay.log").start()
        for n in range(workers):
            stack.start_worker("bench" if n == 0 else f"bench{n + 1}")
        yield stack
    except Exception:
        for proc in stack.processes():
            print_tail(proc.log)
        raise
    finally:
        for proc in stack.processes():
            proc.stop()
        server.stop()


def _registry(cache: Path) -> Path:
    """The tiny model's file with a context that fits the whole job, and the entries of the
    user's registry (GENQ_MODELS_FILE), which `--model` may name."""
    path = cache / "models.toml"
    user = os.environ.get("GENQ_MODELS_FILE")
    path.write_text(
        f'[models.{BENCH_MODEL}]\nbackend = "llama"\npath = "{ensure_tiny_model(cache)}"\n'
        f"n_ctx = {BENCH_N_CTX}\nn_threads = 1\n"
        + (f"\n{Path(user).read_text(encoding='utf-8')}" if user else "")
    )
    return path


@contextmanager
def serving(server: S) -> Iterator[S]:
    """The server started, and stopped however the block ends; its last words if it fails."""
    try:
        server.start()
        yield server
    except Exception:
        print_tail(server.log)
        raise
    finally:
        server.stop()


def cpu_s(proc: psutil.Process) -> float:
    """User and system CPU seconds so far."""
    return sum(proc.cpu_times()[:2])


def print_tail(log: Path) -> None:
    if log.is_file():
        lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        print(f"--- last lines of {log.name} ---", *lines, sep="\n", file=sys.stderr)


@dataclass
class Child(GenqProcess):
    """`python -m ops.bench.child args` (a helper process), started as a genq process is; ready
    once `ready` is in its log. With `stdin=subprocess.PIPE`, `send` writes it one line."""

    args: Sequence[str] = ()
    ready: str = ""

    @property
    def what(self) -> str:
        return " ".join(["ops.bench.child", *self.args[:1]])

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "ops.bench.child", *self.args]

    def _ready(self) -> bool:
        self._check_running()
        return self.ready in self.output()

    def send(self, line: str) -> None:
        """`line`, then end of input (each child reads one line)."""
        if self.proc is None or self.proc.stdin is None:
            raise StackError(f"{self.what} has no stdin")
        self.proc.stdin.write(f"{line}\n".encode())
        self.proc.stdin.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""

    def printed(self, timeout_s: float) -> dict[str, Any]:
        """The JSON line it printed last, once it has exited; StackError with its output
        when it failed or printed none."""
        try:
            code = self.proc.wait(timeout=timeout_s) if self.proc else None
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"{self.what} did not end within {timeout_s:.0f}s") from exc
        output = self.output()
        with contextlib.suppress(IndexError, json.JSONDecodeError):
            printed: dict[str, Any] = json.loads(output.splitlines()[-1])
            if code == 0 and printed:
                return printed
        raise StackError(f"{self.what} exited with {code}; its output:\n{output[-2000:]}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _stop_strays(run_id: str) -> None:
    procs = [p for p in psutil.process_iter(["environ"]) if p.pid != os.getpid()]
    left = [p for p in procs if (p.info["environ"] or {}).get(MARKER) == run_id]  # None: unread
    if left:
        print(f"stopping {len(left)} process(es) left behind", file=sys.stderr)
    for proc in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    for proc in psutil.wait_procs(left, timeout=GRACE_S)[1]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
