"""The gateway's one error boundary (producer/gateway/errors.py and records.py) and the shape
of its routes: every Redis failure is OpenAI's 503 body, every genq error has its status,
nothing else shows internals, an id a client sent is echoed cut short, and a route only calls
the serving object."""

from __future__ import annotations

import ast
import inspect

import redis
from fastapi.routing import APIRoute

from genq import QuotaExceeded
from genq.common.errors import InvalidJob, JobFailed, QueueFull, RedisUnavailable, UnknownModel
from genq.common.settings import Settings
from genq.producer.gateway import routes
from genq.producer.gateway.errors import ID_SHOWN, api_error, not_found, shown
from genq.producer.gateway.records import Records


def test_every_redis_failure_is_a_503_redis_unavailable() -> None:
    failures = [
        redis.ConnectionError("refused"),
        redis.TimeoutError("slow"),
        redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        RedisUnavailable("cannot reach Redis"),
    ]
    for exc in failures:
        error = api_error(exc)
        assert (error.status, error.kind, error.code) == (
            503,
            "service_unavailable",
            "redis_unavailable",
        ), exc


def test_the_gateways_records_mask_the_password_of_the_redis_url() -> None:
    records = Records(Settings(redis_url="redis://user:secret@127.0.0.1:1/0"))
    for exc in (redis.ConnectionError("refused"), redis.ResponseError("OOM")):
        failure = records.failure(exc)
        assert isinstance(failure, RedisUnavailable) and "secret" not in str(failure)


def test_each_genq_error_has_its_status() -> None:
    statuses = {
        InvalidJob("bad"): 400,
        UnknownModel("no such model"): 404,
        QueueFull("full"): 429,
        QuotaExceeded("over", 2.0): 429,
        JobFailed("0" * 32, "invalid_job", "logit_bias names a token id outside", False): 400,
        JobFailed("0" * 32, "generation_failed", "decode failed", False): 500,
    }
    assert {exc: api_error(exc).status for exc in statuses} == statuses
    assert api_error(JobFailed("0" * 32, "generation_failed", "x", False)).code == (
        "generation_failed"
    )


def test_a_quota_refusal_says_when_to_retry_in_whole_seconds_rounded_up() -> None:
    """Retry-After is an integer (RFC 9110): 2.1 s is 3, and never 0 (a client would retry at
    once)."""
    waits = {2.1: "3", 2.0: "2", 0.0: "1", 0.004: "1"}
    for wait_s, header in waits.items():
        error = api_error(QuotaExceeded("tenant 'a': over", wait_s))
        assert (error.status, error.code) == (429, "quota_exceeded")
        assert error.headers == {"Retry-After": header}, wait_s


def test_an_unexpected_error_is_a_500_that_shows_no_internals() -> None:
    error = api_error(KeyError("/srv/secret/path"))
    assert (error.status, error.kind) == (500, "server_error")
    assert "secret" not in error.message


def test_an_id_echoed_in_an_error_is_cut_short() -> None:
    long_id = "f" * 10_000
    assert shown("batch_abc") == "batch_abc"
    assert shown(long_id).startswith("f" * ID_SHOWN) and len(shown(long_id)) < ID_SHOWN + 40
    assert "10000 characters" in not_found("File object", long_id, "file_id").message


def _routes() -> list[ast.AsyncFunctionDef]:
    tree = ast.parse(inspect.getsource(routes))
    return [n for n in tree.body if isinstance(n, ast.AsyncFunctionDef)]


def test_a_route_only_calls_the_serving_object() -> None:
    """vLLM's shape: a route returns what the serving object answers, and reaches into no
    client (no `.redis`, `.keys`, `.settings`, `.submitter`, `.client`)."""
    internals = {"redis", "keys", "settings", "submitter", "client", "_client", "_records"}
    registered = {r.endpoint.__name__ for r in routes.router.routes if isinstance(r, APIRoute)}
    assert registered == {route.name for route in _routes()}
    for route in _routes():
        body = [s for s in route.body if not isinstance(s, ast.Expr)]  # less a docstring
        assert len(body) == 1 and isinstance(body[0], ast.Return), route.name
        names = {n.id for n in ast.walk(route) if isinstance(n, ast.Name)}
        attributes = {n.attr for n in ast.walk(route) if isinstance(n, ast.Attribute)}
        assert "serving" in names and not attributes & internals, route.name
