"""Contracts of the borrowed internals that need no service (genq.common.adapters): kombu's naming
of a queue's priority lists, prometheus_client's value class. Each fails loudly when an
upgrade moves the internal; each fallback is held to the same answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kombu.connection import Connection
from kombu.transport.redis import Channel
from prometheus_client import values

from genq.common.adapters import ggml_invariance, kombu_priority, kombu_redis, prometheus_values
from genq.common.celery_config import (
    BROKER_PRIORITY_STEPS,
    broker_url,
    make_celery,
    priority_lists,
)
from genq.common.settings import Settings


class Unconnected(Channel):
    """kombu's Redis channel with genq's priority steps, never connected: its queue naming."""

    def __init__(self) -> None:
        self.priority_steps = BROKER_PRIORITY_STEPS


def kombus(queue: str) -> list[str]:
    channel = Unconnected()
    return [channel._q_for_pri(queue, p) for p in BROKER_PRIORITY_STEPS]  # type: ignore[no-untyped-call]


def test_priority_lists_are_the_lists_kombu_uses() -> None:
    assert priority_lists("cpu.tiny") == kombus("cpu.tiny")
    assert kombus("cpu.tiny")[0] == "cpu.tiny" and len(set(kombus("cpu.tiny"))) == 10


def test_kombu_still_declares_the_separator_genq_borrows() -> None:
    assert isinstance(Channel.sep, str), "kombu moved Channel.sep: see the adapter"
    assert kombu_priority.separator() == Channel.sep


def test_the_fallback_separator_names_the_same_lists() -> None:
    fallback = kombu_priority.separator(borrow=False)
    assert kombu_priority.priority_lists("q", BROKER_PRIORITY_STEPS, fallback) == kombus("q")


@pytest.fixture
def multiprocess_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """PROMETHEUS_MULTIPROC_DIR set after prometheus_client was imported; the value class is
    picked again without it afterwards, for the other tests."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    yield tmp_path
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    prometheus_values.pick_value_class()


def test_prometheus_client_still_keeps_the_value_class_genq_picks_again() -> None:
    assert callable(values.get_value_class), "prometheus_client moved get_value_class"
    assert hasattr(values, "ValueClass"), "prometheus_client moved values.ValueClass"


@pytest.mark.parametrize("borrow", [True, False], ids=["ValueClass", "fallback"])
def test_metrics_made_after_the_pick_are_file_backed(multiprocess_dir: Path, borrow: bool) -> None:
    assert values.ValueClass is values.MutexValue  # picked before the variable was set
    prometheus_values.pick_value_class(borrow=borrow)
    # A metric made now would keep a file in the directory open for the process's life: the
    # class that metrics will read is checked instead.
    assert values.ValueClass is not values.MutexValue


def _libllama() -> bytes:
    import llama_cpp

    lib = Path(llama_cpp.__file__).parent / "lib"
    files = {path.resolve() for path in lib.glob("libggml*.so*")}
    return b"".join(path.read_bytes() for path in sorted(files))


def test_ggml_still_reads_the_variable_that_turns_off_its_tiled_product() -> None:
    assert ggml_invariance.TILED_MM.encode() in _libllama(), "ggml dropped GGML_CPU_TILED_MM"


def test_llama_cpp_still_reports_its_cpu_features_in_the_form_the_check_reads() -> None:
    # Built without llamafile, the marker is compiled out with it: the form is what is checked.
    assert " = 1 | " in ggml_invariance.system_info()


def test_genqs_install_builds_llama_cpp_without_llamafile() -> None:
    assert ggml_invariance.invariant_build(), "rebuild llama-cpp-python: make install"


def detached_channel(channel_class: type[Channel]) -> Channel:
    """A channel of a kombu connection to genq's broker URL, its transport then detached as
    Celery's consumer detaches it when it collects a lost connection."""
    connection = Connection(broker_url("redis://:secret@127.0.0.1:6399/3"))  # type: ignore[no-untyped-call]
    transport = kombu_redis.Transport(connection)  # type: ignore[no-untyped-call]
    channel = channel_class.__new__(channel_class)  # not connected: __init__ would ping Redis
    channel.connection = transport
    assert channel._connparams()["port"] == 6399  # type: ignore[no-untyped-call]  # attached: kombu's own parameters
    transport.client = None
    return channel


def test_a_detached_channel_refuses_with_a_connection_error_kombu_catches() -> None:
    channel = detached_channel(kombu_redis.Channel)
    with pytest.raises(redis.ConnectionError):
        channel._connparams()  # type: ignore[no-untyped-call]
    assert issubclass(redis.ConnectionError, kombu_redis.Transport.connection_errors)


def test_kombu_s_own_channel_still_fails_as_the_adapter_says() -> None:
    """The defect the adapter mends; once kombu mends it, this fails: drop the adapter."""
    with pytest.raises(AttributeError, match="hostname"):
        detached_channel(Channel)._connparams()  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("scheme", ["redis", "rediss"])
def test_celery_uses_genq_s_transport_and_keeps_the_url_s_scheme(scheme: str) -> None:
    app = make_celery(Settings(redis_url=f"{scheme}://:pw@127.0.0.1:6399/0"))
    with app.connection_for_read() as connection:  # not connected: kombu connects lazily
        assert isinstance(connection.transport, kombu_redis.Transport)
        # Flower picks its broker client by this scheme.
        assert connection.as_uri(include_password=True) == f"{scheme}://:pw@127.0.0.1:6399/0"


def test_a_detached_sentinel_channel_refuses_with_a_connection_error_kombu_catches() -> None:
    connection = Connection("sentinel://:secret@127.0.0.1:26399/3")  # type: ignore[no-untyped-call]
    transport = kombu_redis.SentinelTransport(connection)  # type: ignore[no-untyped-call]
    channel = kombu_redis.SentinelChannel.__new__(kombu_redis.SentinelChannel)
    channel.connection = transport
    assert channel._connparams()["port"] == 26399
    transport.client = None
    with pytest.raises(redis.ConnectionError):
        channel._connparams()
    assert issubclass(redis.ConnectionError, kombu_redis.SentinelTransport.connection_errors)


def test_celery_uses_genq_s_sentinel_transport_for_a_sentinel_url() -> None:
    url = "redis+sentinel://:pw@127.0.0.1:26399,127.0.0.1:26400/primary1/2?sentinel_password=sp"
    app = make_celery(Settings(redis_url=url))
    options = app.conf.broker_transport_options
    assert options["master_name"] == "primary1"
    assert options["sentinel_kwargs"] == {"password": "sp"}
    assert options["priority_steps"] == list(range(10))  # genq's own options kept
    with app.connection_for_read() as connection:
        assert isinstance(connection.transport, kombu_redis.SentinelTransport)
        # Flower picks its broker client by this scheme (its RedisSentinel).
        assert connection.as_uri(include_password=True) == "sentinel://:pw@127.0.0.1:26399/2"
        assert connection.alt == [
            "sentinel://:pw@127.0.0.1:26399/2",
            "sentinel://:pw@127.0.0.1:26400/2",
        ]
