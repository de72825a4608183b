"""A private genq stack for one benchmark run: redis-server, one `genq worker`, and a temporary
GENQ_CACHE_DIR, all stopped and removed on the way out (Ctrl-C included)."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common.settings import Settings
from common.tinymodel import ensure_tiny_model
from ops.bench.workload import BENCH_MODEL, BENCH_N_CTX
from ops.localstack import RedisServer, Worker, settings_for

LOG_TAIL_LINES = 30


@dataclass(frozen=True)
class Stack:
    settings: Settings
    worker_log: Path


@contextmanager
def cache_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="genq-bench-") as path:
        yield Path(path)


@contextmanager
def local_stack(cache: Path, overrides: Mapping[str, str]) -> Iterator[Stack]:
    """`overrides`: extra GENQ_* variables for the worker (and this process's Settings)."""
    redis = RedisServer()  # its port is picked here, its process started below
    env = {
        "GENQ_REDIS_URL": redis.url,
        "GENQ_CACHE_DIR": str(cache),
        "GENQ_MODELS_FILE": str(_registry(cache)),
        **overrides,
    }
    log = cache / "worker.log"
    worker = Worker(env=env, log=log, name="bench")
    try:
        redis.start()
        worker.start()
        yield Stack(settings_for(env), log)
    except Exception:
        print_tail(log)
        raise
    finally:
        worker.stop()
        redis.stop()


def _registry(cache: Path) -> Path:
    """A registry naming the tiny model's file with a context that fits the whole job."""
    path = cache / "models.toml"
    path.write_text(
        f'[models.{BENCH_MODEL}]\nbackend = "llama"\npath = "{ensure_tiny_model(cache)}"\n'
        f"n_ctx = {BENCH_N_CTX}\nn_threads = 1\n"
    )
    return path


def print_tail(log: Path) -> None:
    if not log.is_file():
        return
    lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    print(f"--- last lines of {log.name} ---", *lines, sep="\n", file=sys.stderr)
