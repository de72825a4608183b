"""genq.producer.retry: reads retry a lost Redis connection with backoff for GENQ_REDIS_RETRY_S,
then raise RedisUnavailable; the sync and async faces behave the same."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from genq.common.errors import InvalidEntry, RedisUnavailable
from genq.common.settings import Settings
from genq.producer.retry import MAX_DELAY_S, Backoff, retrying, retrying_async


class Flaky:
    """A read that fails `failures` times with `error`, then answers."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "answer"

    async def read_async(self) -> str:
        return self()


def test_backoff_doubles_up_to_its_cap_and_stops_at_its_budget() -> None:
    backoff = Backoff(budget_s=60.0)
    delays = [backoff.next_delay() for _ in range(8)]
    assert delays[:3] == [0.05, 0.1, 0.2]
    assert max(d for d in delays if d is not None) == MAX_DELAY_S
    assert Backoff(budget_s=0.0).next_delay() is None


@pytest.mark.parametrize(
    "error",
    [redis.ConnectionError("reset"), redis.TimeoutError("slow"), redis.BusyLoadingError("loading")],
)
def test_a_lost_connection_is_retried_until_it_answers(error: Exception) -> None:
    read = Flaky(3, error)
    assert retrying(Settings(redis_retry_s=10), read) == "answer"
    assert read.calls == 4


def test_after_the_budget_it_raises_redis_unavailable_without_the_password() -> None:
    settings = Settings(redis_url="redis://:pw-secret@localhost:1/0", redis_retry_s=0.3)
    started = time.monotonic()
    with pytest.raises(RedisUnavailable) as caught:
        retrying(settings, Flaky(1000, redis.ConnectionError("refused")))
    assert 0.3 <= time.monotonic() - started < 1.5
    assert "pw-secret" not in str(caught.value) and "refused" in str(caught.value)


def test_a_budget_of_zero_raises_at_the_first_failure() -> None:
    read = Flaky(1, redis.ConnectionError("refused"))
    with pytest.raises(RedisUnavailable):
        retrying(Settings(redis_retry_s=0), read)
    assert read.calls == 1


def test_a_refused_read_is_a_genq_error_and_not_retried() -> None:
    read = Flaky(1, redis.ResponseError("WRONGTYPE Operation against a key holding the wrong"))
    with pytest.raises(InvalidEntry, match="WRONGTYPE"):
        retrying(Settings(), read)
    assert read.calls == 1


def test_a_wrong_password_is_not_retried() -> None:
    read = Flaky(1, redis.AuthenticationError("invalid username-password pair"))
    with pytest.raises(RedisUnavailable):
        retrying(Settings(), read)
    assert read.calls == 1


def test_the_async_face_retries_the_same_way() -> None:
    read = Flaky(2, redis.ConnectionError("reset"))
    assert asyncio.run(retrying_async(Settings(), read.read_async)) == "answer"
    assert read.calls == 3
    with pytest.raises(RedisUnavailable):
        asyncio.run(
            retrying_async(
                Settings(redis_retry_s=0), Flaky(1, redis.ConnectionError("x")).read_async
            )
        )


def test_retry_setting_is_bounded() -> None:
    with pytest.raises(ValueError, match="redis_retry_s"):
        Settings(redis_retry_s=-1)
    assert Settings().redis_retry_s == 30.0
