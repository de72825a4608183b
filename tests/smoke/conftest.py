"""Docker smoke tier: genq's worker image (compose/Dockerfile, target cpu) and relay run as
containers beside a Redis container, assembled with pytest-celery's setup (CeleryTestSetup:
a Redis broker node, a worker cluster of genq's own worker container); the test process
submits jobs with genq's Client through the Redis container's port on the host.

Opt-in: `make smoke` (pytest tests/smoke -m smoke -p celery -p docker_tools; pytest-celery's
plugins are off by default, see pyproject.toml). Where no Docker engine answers, every test
here is skipped before any image or container is made.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_celery import (
    CeleryBrokerCluster,
    CeleryTestContainer,
    CeleryTestWorker,
    CeleryWorkerCluster,
    CeleryWorkerContainer,
    RedisTestBroker,
)
from pytest_docker_tools import build, container, fxtr

from genq import Client
from ops.localstack import settings_for

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
IMAGE_TAG = "genq/smoke:cpu"
ENGINE_TIMEOUT_S = 5
CONTAINER_READY_S = 180
OPT_IN = (
    "the Docker smoke tier is opt-in: make smoke "
    "(pytest tests/smoke -m smoke -p celery -p docker_tools)"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Not asked for (`-m smoke` with pytest-celery's plugin): skipped without a fixture made."""
    chosen = "smoke" in (config.option.markexpr or "")
    if chosen and config.pluginmanager.has_plugin("celery"):
        return
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.skip(reason=OPT_IN))


@pytest.fixture(scope="session", autouse=True)
def docker_engine() -> Any:
    """A Docker client whose engine answered a ping; the tier is skipped when none does.
    Autouse and session-scoped: it runs before any image or container fixture."""
    import docker

    with warnings.catch_warnings():
        # docker-py leaves the socket of a connection that failed open: it is collected in
        # here, quietly, rather than fail the session as an unraisable ResourceWarning.
        warnings.simplefilter("ignore", ResourceWarning)
        client, error = _connect(docker)
        gc.collect()
    if client is None:
        pytest.skip(f"no Docker engine: docker info failed: {error}")
    return client


def _connect(docker: Any) -> tuple[Any, str]:
    """(a client whose engine answered, "") or (None, why not)."""
    try:
        client = docker.from_env(timeout=ENGINE_TIMEOUT_S)  # asks the engine its API version
    except Exception as exc:  # DockerException: a missing or refused socket, a timeout
        return None, str(exc)
    try:
        client.ping()
    except Exception as exc:
        client.close()
        return None, str(exc)
    return client, ""


@pytest.fixture(scope="session")
def docker_client(docker_engine: Any) -> Any:
    """pytest_docker_tools' client (every image and container fixture uses it): the one
    that answered."""
    return docker_engine


class GenqWorkerContainer(CeleryWorkerContainer):  # type: ignore[misc]
    """`genq worker` in genq's image: it serves the tiny model (queue cpu.tiny)."""

    @classmethod
    def command(cls, *args: str, **kwargs: Any) -> list[str]:
        return ["genq", "worker", "-n", f"{cls.worker_name()}@%h", *args]

    @classmethod
    def worker_name(cls) -> str:
        return "smoke"

    @classmethod
    def worker_queue(cls) -> str:
        return "cpu.tiny"

    @classmethod
    def version(cls) -> str:
        return "genq"  # whatever Celery genq's image installed


class GenqRelayContainer(CeleryTestContainer):  # type: ignore[misc]
    """`genq relay` in genq's image."""

    @property
    def ready_prompt(self) -> str:
        return "relay: moving frames"


genq_image = build(path=str(ROOT), dockerfile="compose/Dockerfile", target="cpu", tag=IMAGE_TAG)


def _genq_container(wrapper_class: Any, command: list[str]) -> Any:
    """A fixture: a container of genq's image on the setup's network, given the GENQ_*
    variables of `genq_container_env`."""
    return container(
        image="{genq_image.id}",
        environment=fxtr("genq_container_env"),
        network="{default_pytest_celery_network.name}",
        wrapper_class=wrapper_class,
        timeout=CONTAINER_READY_S,
        command=command,
    )


genq_worker_container = _genq_container(GenqWorkerContainer, GenqWorkerContainer.command())
genq_relay_container = _genq_container(GenqRelayContainer, ["genq", "relay"])


@pytest.fixture
def celery_broker_cluster(celery_redis_broker: RedisTestBroker) -> Iterator[CeleryBrokerCluster]:
    """Redis only (pytest-celery would also try RabbitMQ): genq's broker and store."""
    yield from _cluster(CeleryBrokerCluster, celery_redis_broker)


@pytest.fixture
def celery_backend_cluster() -> None:
    """None: genq keeps job results in its own Redis keys, not in a Celery result backend."""
    return None


@pytest.fixture
def genq_container_env(celery_broker_cluster_config: dict[str, Any]) -> dict[str, str]:
    """GENQ_* variables of the containers: the Redis container's address inside the network,
    and short leases so that a killed worker's job resumes within seconds."""
    (redis_url,) = celery_broker_cluster_config["urls"]
    return {"GENQ_REDIS_URL": redis_url, "GENQ_LEASE_TTL_S": "2", "GENQ_REAP_INTERVAL_S": "0.2"}


@pytest.fixture
def genq_worker(
    genq_worker_container: GenqWorkerContainer, celery_setup_app: Any
) -> Iterator[CeleryTestWorker]:
    worker = CeleryTestWorker(genq_worker_container, app=celery_setup_app)
    yield worker
    worker.teardown()


@pytest.fixture
def celery_worker_cluster(genq_worker: CeleryTestWorker) -> Iterator[CeleryWorkerCluster]:
    """The setup's workers: genq's worker container (instead of pytest-celery's own image)."""
    yield from _cluster(CeleryWorkerCluster, genq_worker)


def _cluster(kind: Any, node: Any) -> Iterator[Any]:
    """A one-node pytest-celery cluster, torn down after the test."""
    cluster = kind(node)
    yield cluster
    cluster.teardown()


@pytest.fixture
def client(
    celery_setup: Any, genq_relay_container: GenqRelayContainer, tmp_path: Path
) -> Iterator[Client]:
    """genq's Client in the test process, through the Redis container's port on the host,
    with the relay running beside the worker."""
    host_url = celery_setup.broker.config()["host_url"]
    env = {"GENQ_REDIS_URL": host_url, "GENQ_CACHE_DIR": str(tmp_path / "cache")}
    with Client(settings_for(env)) as genq:
        yield genq
