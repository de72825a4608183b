"""A private genq stack for one benchmark section: redis-server, a relay and `genq worker`s,
with a registry and logs in a temporary directory, all stopped and removed on the way out
(Ctrl-C included). Models are cached where genq caches them (GENQ_CACHE_DIR), so that a model
assembled on first use (gemma-3-270m) is assembled once, not once per run.

Readers read the job's Redis Stream, which only a relay writes, so the relay starts first.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from genq.common.settings import Settings
from genq.common.tinymodel import ensure_tiny_model
from ops.bench.workload import BENCH_MODEL, BENCH_N_CTX
from ops.localstack import GenqProcess, RedisServer, Relay, StackError, Worker, settings_for

LOG_TAIL_LINES = 30


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

    def start_relay(self) -> Relay:
        self.relay = Relay(env=self.env, log=self.cache / "relay.log")
        return self.relay.start()

    def start_worker(self, name: str = "bench") -> Worker:
        """A worker named `name` (its Celery node is `name@host`); replaces a stopped one."""
        self.workers = [w for w in self.workers if w.name != name]
        worker = Worker(env=self.env, log=self.cache / f"worker-{name}.log", name=name)
        self.workers.append(worker)
        return worker.start()

    def worker(self, name: str) -> Worker:
        return next(w for w in self.workers if w.name == name)

    def processes(self) -> list[GenqProcess]:
        relay: list[GenqProcess] = [self.relay] if self.relay is not None else []
        return [*self.workers, *relay]

    def stop(self) -> None:
        for proc in self.processes():
            proc.stop()
        self.redis.stop()

    def check_alive(self) -> None:
        """StackError naming a genq process of it that has exited (a dead relay leaves readers
        waiting for the record fallback; a dead worker leaves jobs queued)."""
        for proc in self.processes():
            if proc.proc is not None and proc.proc.poll() is not None:
                print_tail(proc.log)
                raise StackError(
                    f"genq {proc.command()[0]} exited with {proc.proc.returncode} during the "
                    f"run; the end of its log is above ({proc.log.name})"
                )

    def print_logs(self) -> None:
        for proc in self.processes():
            print_tail(proc.log)


@contextmanager
def cache_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="genq-bench-") as path:
        yield Path(path)


@contextmanager
def local_stack(
    cache: Path, overrides: Mapping[str, str], workers: int = 1, relay: bool = True
) -> Iterator[Stack]:
    """redis-server, then the relay, then `workers` workers named bench, bench2, ...
    `overrides`: extra GENQ_* variables for every process (and this process's Settings)."""
    server = RedisServer()  # its port is picked here, its process started below
    env = {
        "GENQ_REDIS_URL": server.url,
        "GENQ_CACHE_DIR": str(Settings().cache_dir),
        "GENQ_MODELS_FILE": str(_registry(cache)),
        # No metrics endpoints: a section's several workers would contend for one port.
        "GENQ_METRICS_PORT": "0",
        "GENQ_RELAY_METRICS_PORT": "0",
        **overrides,
    }
    stack = Stack(env, cache, server)
    try:
        server.start()
        if relay:
            stack.start_relay()
        for n in range(workers):
            stack.start_worker("bench" if n == 0 else f"bench{n + 1}")
        yield stack
    except Exception:
        stack.print_logs()
        raise
    finally:
        stack.stop()


def _registry(cache: Path) -> Path:
    """A registry naming the tiny model's file with a context that fits the whole job, and
    the entries of the user's registry (GENQ_MODELS_FILE), which `--model` may name."""
    path = cache / "models.toml"
    user = os.environ.get("GENQ_MODELS_FILE")
    path.write_text(
        f'[models.{BENCH_MODEL}]\nbackend = "llama"\npath = "{ensure_tiny_model(cache)}"\n'
        f"n_ctx = {BENCH_N_CTX}\nn_threads = 1\n"
        + (f"\n{Path(user).read_text(encoding='utf-8')}" if user else "")
    )
    return path


def print_tail(log: Path) -> None:
    if not log.is_file():
        return
    lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    print(f"--- last lines of {log.name} ---", *lines, sep="\n", file=sys.stderr)
