"""Integration tier: one real redis-server and one real `genq worker` for the session.

Tests share them; every job has its own unguessable id, so nothing needs flushing between
tests (flushing would also drop the broker's queue bindings under a running worker).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
import redis

from genq import Client
from genq.common.registry import ModelRegistry
from genq.common.settings import Settings
from ops.localstack import Flower, GenqProcess, RedisServer, Relay, Worker, settings_for
from tests.state import job_record

from .support import BROKEN_MODEL

P = TypeVar("P", bound=GenqProcess)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def genq_env(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """GENQ_* variables shared by the test process's settings and the worker subprocess."""
    root = tmp_path_factory.mktemp("genq")
    broken = root / "broken.gguf"
    broken.write_bytes(b"GGUF not really a model" * 64)
    models = root / "models.toml"
    models.write_text(
        f'[models.{BROKEN_MODEL}]\nbackend = "llama"\npath = "{broken}"\nn_ctx = 256\n'
    )
    return {
        "GENQ_REDIS_URL": redis_server.url,
        "GENQ_CACHE_DIR": str(root / "cache"),
        "GENQ_MODELS_FILE": str(models),
        # Short leases, so that a killed worker's job resumes within seconds.
        "GENQ_LEASE_TTL_S": "2",
        "GENQ_REAP_INTERVAL_S": "0.2",
        # No metrics endpoints: the many workers of the session would contend for one port.
        # Tests of metrics give theirs free ports.
        "GENQ_METRICS_PORT": "0",
        "GENQ_RELAY_METRICS_PORT": "0",
    }


@pytest.fixture(scope="session")
def settings(genq_env: dict[str, str]) -> Settings:
    return settings_for(genq_env)


@pytest.fixture(scope="session")
def worker(
    genq_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, relay: Relay
) -> Iterator[Worker]:
    """The session's worker; the relay runs beside it, as in any genq stack."""
    log = tmp_path_factory.mktemp("logs") / "worker.log"
    proc = Worker(env=genq_env, log=log).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def relay(genq_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    log = tmp_path_factory.mktemp("logs") / "relay.log"
    proc = Relay(env=genq_env, log=log).start()
    yield proc
    proc.stop()


@pytest.fixture
def client(settings: Settings, worker: Worker, relay: Relay) -> Iterator[Client]:
    with Client(settings) as c:
        yield c


@pytest.fixture(scope="session")
def tiny_vocab(settings: Settings) -> object:
    """The tiny model's vocabulary in this process, to check text against token ids."""
    from llama_cpp import Llama

    path = ModelRegistry.from_settings(settings).local_path("tiny")
    return Llama(model_path=str(path), vocab_only=True, verbose=False)


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    yield r
    r.close()


@dataclass
class Stack:
    """A stack of its own for a test that kills things: its own Redis database (so its own
    broker queues), relays and workers; all stopped at the end of the test."""

    env: dict[str, str]
    logs: Path
    procs: list[GenqProcess] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return settings_for(self.env)

    def worker(self, name: str, *args: str, **env: str) -> Worker:
        """`genq worker` named `name`, given `args` (e.g. --models a) and `env` beside the
        stack's; by default it serves every cpu model of the registry."""
        log = self.logs / f"{name}.log"
        return self._start(Worker(env={**self.env, **env}, log=log, args=args, name=name))

    def relay(self, name: str = "relay", **env: str) -> Relay:
        return self._start(Relay(env={**self.env, **env}, log=self.logs / f"{name}.log"))

    def flower(self, *args: str, **env: str) -> Flower:
        """`genq flower` on a free port, given `args`; `env` adds variables (FLOWER_*)."""
        log = self.logs / "flower.log"
        return self._start(Flower(env={**self.env, **env}, log=log, args=args))

    def _start(self, proc: P) -> P:
        self.procs.append(proc)
        return proc.start()

    def holder(self, client: Client, job_id: str) -> Worker:
        """The worker running the job now, from the job's record."""
        record = job_record(client.redis, client.keys, job_id)
        name = record.worker.partition("@")[0]
        return next(p for p in self.procs if isinstance(p, Worker) and p.name == name)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture(scope="session")
def databases() -> Iterator[int]:
    return itertools.count(1)


def new_stack(genq_env: dict[str, str], logs: Path, databases: Iterator[int]) -> Stack:
    """A Stack on the next unused Redis database, logging under `logs`; the caller stops it."""
    url = genq_env["GENQ_REDIS_URL"].rsplit("/", 1)[0] + f"/{next(databases)}"
    return Stack({**genq_env, "GENQ_REDIS_URL": url}, logs)


@pytest.fixture
def make_stack(
    genq_env: dict[str, str], tmp_path: Path, databases: Iterator[int]
) -> Iterator[Callable[[], Stack]]:
    stacks: list[Stack] = []

    def make() -> Stack:
        stacks.append(new_stack(genq_env, tmp_path, databases))
        return stacks[-1]

    yield make
    for stack in stacks:
        stack.stop()
