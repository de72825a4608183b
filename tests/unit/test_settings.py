"""genq.common.settings: one settings object from GENQ_* variables, with bounds and no leaked
passwords."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from genq.common.celery_config import broker_url, celery_config
from genq.common.settings import DEFAULT_REDIS_URL, Settings, redact_url

PASSWORD = "s3cr3t-pw"


def test_defaults_without_environment() -> None:
    settings = Settings()
    assert settings.redis_url == DEFAULT_REDIS_URL
    assert settings.key_prefix == "genq"
    assert settings.models_file is None
    assert settings.chunk_tokens == 16
    assert settings.chunk_interval_ms == 20.0


def test_reads_genq_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENQ_REDIS_URL", "redis://cache.internal:6380/2")
    monkeypatch.setenv("GENQ_KEY_PREFIX", "staging")
    monkeypatch.setenv("GENQ_MODELS_FILE", "/etc/genq/models.toml")
    monkeypatch.setenv("GENQ_CHUNK_TOKENS", "4")
    monkeypatch.setenv("GENQ_CHUNK_INTERVAL_MS", "2.5")
    settings = Settings()
    assert settings.redis_url == "redis://cache.internal:6380/2"
    assert settings.key_prefix == "staging"
    assert settings.models_file == Path("/etc/genq/models.toml")
    assert settings.chunk_tokens == 4
    assert settings.chunk_interval_ms == 2.5


def test_ignores_variables_without_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:6379/0")
    monkeypatch.setenv("KEY_PREFIX", "other")
    assert Settings().redis_url == DEFAULT_REDIS_URL
    assert Settings().key_prefix == "genq"


def test_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENQ_CHUNK_TOKENS", "4")
    assert Settings(chunk_tokens=8).chunk_tokens == 8


def test_out_of_range_environment_value_is_rejected_naming_the_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GENQ_CHUNK_TOKENS", "0")
    with pytest.raises(ValidationError, match="chunk_tokens"):
        Settings()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("chunk_tokens", 0),
        ("chunk_tokens", 4097),
        ("chunk_interval_ms", -0.1),
        ("chunk_interval_ms", 10_000.1),
        ("key_prefix", ""),
        ("key_prefix", "has space"),
        ("key_prefix", "a:b"),
        ("job_ttl_s", 59),
        ("max_prompt_chars", 0),
        ("device", "tpu"),
        ("heartbeat_interval_s", 0.0),
        ("heartbeat_interval_s", 301),
        ("relay_shard", "0/2"),
        ("relay_shard", "3/2"),
        ("relay_shard", "1/17"),
        ("relay_shard", "1-2"),
    ],
)
def test_rejects_out_of_bounds_values(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate({field: value})
    assert [error["loc"] for error in caught.value.errors()] == [(field,)]


@pytest.mark.parametrize(("field", "value"), [("chunk_tokens", 1), ("chunk_tokens", 4096)])
def test_accepts_values_on_the_bounds(field: str, value: int) -> None:
    assert getattr(Settings.model_validate({field: value}), field) == value


def test_a_relay_shard_reads_as_its_share_and_share_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().relay_share == (1, 1)
    monkeypatch.setenv("GENQ_RELAY_SHARD", "16/16")
    assert Settings().relay_share == (16, 16)


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "rediss://cache.example.com:6380/1",
        "unix:///var/run/redis.sock",
    ],
)
def test_accepts_redis_url_schemes(url: str) -> None:
    assert Settings(redis_url=url).redis_url == url


@pytest.mark.parametrize(
    "url", ["http://localhost:6379", "localhost:6379", "sentinel://h:26379", "/tmp/r.sock"]
)
def test_rejects_unknown_url_schemes(url: str) -> None:
    with pytest.raises(ValidationError, match="must start with redis://, rediss://, unix://"):
        Settings(redis_url=url)


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        (f"redis://user:{PASSWORD}@host", "redis://user:***@host"),
        (f"rediss://:{PASSWORD}@host:6380/1", "rediss://:***@host:6380/1"),
        (f"redis://default:{PASSWORD}@10.0.0.5:6379/0?ssl_cert_reqs=none",
         "redis://default:***@10.0.0.5:6379/0?ssl_cert_reqs=none"),
        (f"redis://:p@{PASSWORD}@host", "redis://:***@host"),
    ],
)  # fmt: skip
def test_redact_url_hides_the_password(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "redis://user@host:6379",
        "rediss://cache.example.com:6380/1",
        "unix:///var/run/redis.sock?db=2",
    ],
)
def test_redact_url_leaves_passwordless_urls_alone(url: str) -> None:
    assert redact_url(url) == url


def test_repr_and_str_never_show_the_password() -> None:
    settings = Settings(redis_url=f"redis://user:{PASSWORD}@host:6379/0")
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings)
    assert settings.redacted_redis_url == "redis://user:***@host:6379/0"


def test_settings_are_immutable() -> None:
    settings = Settings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.chunk_tokens = 3  # type: ignore[misc]


def test_redact_url_hides_a_password_given_as_query_argument() -> None:
    assert PASSWORD not in redact_url(f"unix:///var/run/redis.sock?db=0&password={PASSWORD}")


def test_redact_url_keeps_an_ipv6_host_bracketed() -> None:
    assert redact_url(f"redis://:{PASSWORD}@[::1]:6379/0") == "redis://:***@[::1]:6379/0"


def test_rejected_redis_url_error_does_not_show_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GENQ_REDIS_URL", f"redis+sentinel://:{PASSWORD}@host:26379")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert PASSWORD not in str(caught.value)


def test_a_worker_serves_the_cpu_class_and_every_model_of_it_by_default() -> None:
    settings = Settings()
    assert (settings.device, settings.worker_models) == ("cpu", ())
    assert settings.heartbeat_interval_s == 5.0


def test_worker_models_are_read_comma_separated_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GENQ_WORKER_MODELS", " b, a,,b ")
    monkeypatch.setenv("GENQ_DEVICE", "gpu")
    settings = Settings()
    assert settings.worker_models == ("b", "a")  # blanks and repeats dropped, order kept
    assert settings.device == "gpu"


def test_worker_models_are_accepted_as_a_sequence_too() -> None:
    assert Settings(worker_models=["one", "two"]).worker_models == ("one", "two")


def test_a_worker_model_name_that_cannot_name_a_queue_is_rejected() -> None:
    with pytest.raises(ValidationError, match="worker_models"):
        Settings(worker_models="a b")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),  # kombu's form already
        (
            "rediss://:pw@cache.example.com:6380/1?ssl_cert_reqs=required",
            "rediss://:pw@cache.example.com:6380/1?ssl_cert_reqs=required",
        ),
        (
            "redis://h/0?password=p%40ss&health_check_interval=5",
            "redis://:p%40ss@h/0?health_check_interval=5",
        ),
        ("redis://user:inline@h:1/2?password=query", "redis://user:inline@h:1/2"),  # as redis-py
        ("redis://[::1]:6379/0?password=a", "redis://:a@[::1]:6379/0"),
        ("unix:///var/run/redis.sock", "redis+socket:///var/run/redis.sock"),
        (
            "unix:///var/run/redis.sock?db=3&password=s3c%2Fr%40t",
            "redis+socket://:s3c%2Fr%40t@/var/run/redis.sock?virtual_host=3",
        ),
    ],
)
def test_the_broker_gets_kombus_spelling_of_the_redis_url(url: str, expected: str) -> None:
    assert broker_url(url) == expected
    assert celery_config(Settings(redis_url=url))["broker_url"] == expected
