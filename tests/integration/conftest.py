"""Integration tier: one real redis-server and one real `genq worker` for the session.

Tests share them; every job has its own unguessable id, so nothing needs flushing between
tests (flushing would also drop the broker's queue bindings under a running worker).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from common.registry import ModelRegistry
from common.settings import Settings
from ops.localstack import RedisServer, Worker
from producer import Client

from .support import BROKEN_MODEL


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
    }


@pytest.fixture(scope="session")
def settings(genq_env: dict[str, str]) -> Settings:
    return Settings(
        redis_url=genq_env["GENQ_REDIS_URL"],
        cache_dir=Path(genq_env["GENQ_CACHE_DIR"]),
        models_file=Path(genq_env["GENQ_MODELS_FILE"]),
    )


@pytest.fixture(scope="session")
def worker(genq_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    log = tmp_path_factory.mktemp("logs") / "worker.log"
    proc = Worker(env=genq_env, log=log).start()
    yield proc
    proc.stop()


@pytest.fixture
def client(settings: Settings, worker: Worker) -> Iterator[Client]:
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
