"""compose/docker-compose.yml, read without Docker: the services it promises, and a command line
in each that the genq CLI (or Celery, for `celery -A genq.workers.app`) accepts; and its Sentinel
override, compose/docker-compose.sentinel.yml."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from genq.common import sentinel
from genq.common.settings import Settings
from genq.producer.cli import cli

COMPOSE = Path(__file__).parents[2] / "compose"
GENQ_SERVICES = ["relay", "worker-cpu", "worker-gpu", "flower", "gateway"]


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    # safe_load resolves the anchors and `<<` merge keys the file uses.
    loaded = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    found: dict[str, dict[str, Any]] = loaded["services"]
    return found


def dockerfile_stages() -> set[str]:
    text = (COMPOSE / "Dockerfile").read_text()
    return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", text, re.MULTILINE | re.IGNORECASE))


def parse_genq(argv: list[str]) -> click.Context:
    """`genq SUBCOMMAND ARGS` parsed as the CLI parses it, without running anything:
    click.UsageError (NoSuchOption, BadParameter ...) for a command line it would refuse."""
    assert argv[0] == "genq"
    group = cli.make_context("genq", argv[1:])
    # The group keeps the subcommand's arguments in `args`; its name stands just before them.
    name = argv[len(argv) - len(group.args) - 1]
    command = cli.get_command(group, name)
    assert command is not None, f"genq has no command {name!r}"
    return command.make_context(name, list(group.args), parent=group)


def test_names_the_stack_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"redis", *GENQ_SERVICES}


def test_redis_persists_its_data_and_reports_its_health(
    services: dict[str, dict[str, Any]],
) -> None:
    redis = services["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert redis["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    for name in GENQ_SERVICES:
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_gpu_worker_is_opt_in_builds_cuda_and_reserves_an_nvidia_gpu(
    services: dict[str, dict[str, Any]],
) -> None:
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["target"] == "gpu"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert parse_genq(gpu["command"]).params["device"] == "gpu"
    assert all("profiles" not in services[name] for name in services if name != "worker-gpu")


def test_every_built_target_is_a_stage_of_the_dockerfile(
    services: dict[str, dict[str, Any]],
) -> None:
    targets = {s["build"]["target"] for s in services.values() if "build" in s}
    assert targets == {"cpu", "gpu"}
    assert targets <= dockerfile_stages()


@pytest.mark.parametrize("name", GENQ_SERVICES)
def test_service_command_is_one_genq_or_celery_accepts(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    command = services[name]["command"]
    if command[0] == "celery":
        assert command[1:3] == ["-A", "genq.workers.app"]
        importlib.import_module("genq.workers.app")  # the app Celery is pointed at exists
        return
    context = parse_genq(command)
    # `genq worker` hands options it does not know to celery: compose gives it none.
    assert context.params.get("celery_args", ()) == ()


def test_a_misspelt_option_is_refused_by_the_parse() -> None:
    with pytest.raises(click.NoSuchOption):
        parse_genq(["genq", "relay", "--no-such-option"])
    with pytest.raises(click.BadParameter):
        parse_genq(["genq", "worker", "--device", "tpu"])


def test_environment_names_only_genq_settings(services: dict[str, dict[str, Any]]) -> None:
    settings = {f"GENQ_{name.upper()}" for name in Settings.model_fields}
    for name in GENQ_SERVICES:
        environment = services[name]["environment"]
        assert environment["GENQ_REDIS_URL"] == "redis://redis:6379/0"
        assert {key for key in environment if key.startswith("GENQ_")} <= settings


def test_metrics_ports_are_exposed_where_settings_put_them(
    services: dict[str, dict[str, Any]],
) -> None:
    env = services["relay"]["environment"]
    assert env["GENQ_METRICS_HOST"] == "0.0.0.0"  # reachable from outside the container
    assert str(env["GENQ_RELAY_METRICS_PORT"]) in services["relay"]["expose"]
    for name in ["worker-cpu", "worker-gpu"]:
        port = str(services[name]["environment"]["GENQ_METRICS_PORT"])
        assert port in services[name]["expose"]
        assert port in services[name]["ports"]  # on the host too, a port per replica


def test_every_service_is_started_again_when_it_exits(
    services: dict[str, dict[str, Any]],
) -> None:
    # The relay above all: while none runs, no stream, checkpoint or resume moves.
    assert {name: s.get("restart") for name, s in services.items()} == dict.fromkeys(
        services, "unless-stopped"
    )


def test_gateway_serves_every_interface_with_the_api_keys_given_to_compose(
    services: dict[str, dict[str, Any]],
) -> None:
    gateway = services["gateway"]
    params = parse_genq(gateway["command"]).params
    assert params["host"] == "0.0.0.0"
    # `genq serve` refuses another interface than loopback without keys: compose passes them.
    assert gateway["environment"]["GENQ_API_KEYS"] == "${GENQ_API_KEYS:-}"
    assert f"{params['port']}:{params['port']}" in gateway["ports"]


@pytest.fixture(scope="module")
def sentinel_services() -> dict[str, dict[str, Any]]:
    """The Sentinel override's services (merged over the base file's by compose)."""
    loaded = yaml.safe_load((COMPOSE / "docker-compose.sentinel.yml").read_text())
    found: dict[str, dict[str, Any]] = loaded["services"]
    return found


def sentinel_config(service: dict[str, Any]) -> dict[str, list[str]]:
    """The `sentinel …` lines of the configuration a Sentinel service writes at start, by
    directive: {"monitor": ["genq", "redis", "6379", "2"], …}."""
    script = service["command"][-1]
    assert service["command"][:2] == ["sh", "-c"] and "--sentinel" in script
    lines = re.findall(r"^\s*'sentinel (\S+) (.*)'", script, re.MULTILINE)
    return {directive: rest.split() for directive, rest in lines}


def test_sentinel_variant_points_every_genq_service_at_the_sentinels(
    services: dict[str, dict[str, Any]], sentinel_services: dict[str, dict[str, Any]]
) -> None:
    sentinels = sorted(name for name in sentinel_services if name.startswith("sentinel-"))
    assert len(sentinels) == 3
    settings = {f"GENQ_{name.upper()}" for name in Settings.model_fields}
    for name in GENQ_SERVICES:
        environment = sentinel_services[name]["environment"]
        url = sentinel.parse(environment["GENQ_REDIS_URL"])
        assert url.sentinels == tuple((host, 26379) for host in sentinels)
        assert url.primary == "genq" and url.db == 0
        assert set(environment) <= settings
        assert set(sentinel_services[name]["depends_on"]) == set(sentinels)
    # Every genq service of the base file, and no other, is given the Sentinels.
    genq = {n for n, s in sentinel_services.items() if "GENQ_REDIS_URL" in s.get("environment", {})}
    assert genq == set(GENQ_SERVICES) <= set(services)


def test_sentinels_monitor_the_redis_service_and_the_replica_follows_it(
    services: dict[str, dict[str, Any]], sentinel_services: dict[str, dict[str, Any]]
) -> None:
    sentinels = [s for name, s in sentinel_services.items() if name.startswith("sentinel-")]
    for service in sentinels:
        config = sentinel_config(service)
        name, host, port, quorum = config["monitor"]
        assert (name, host, port) == ("genq", "redis", "6379") and host in services
        assert 1 < int(quorum) <= len(sentinels)  # a majority agrees before a failover
        assert config["down-after-milliseconds"] == ["genq", "5000"]
        assert service["healthcheck"]["test"][1:] == ["redis-cli", "-p", "26379", "ping"]
    replica = sentinel_services["redis-replica"]["command"]
    assert replica[replica.index("--replicaof") + 1 :][:2] == ["redis", "6379"]
    # The primary keeps its append-only file, as in the base file.
    redis = sentinel_services["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes"
