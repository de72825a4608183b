"""Quotas hold at every submit: a tenant's tokens per minute (a token bucket in Redis) and its
waiting jobs (max_queued). Over either, the submit is refused with QuotaExceeded (a 429 with
Retry-After from the gateway, exit 1 from the CLI) and nothing is queued: no record, no task
message, no tokens kept; once the bucket refills, or jobs leave the queue, it passes.

Each test has a Redis database of its own that no worker serves, so that what it queues stays
waiting."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from genq import AsyncClient, Client
from genq.common.errors import InvalidJob, QuotaExceeded
from genq.common.store import queues, run
from genq.common.store import quotas as buckets
from genq.common.store.tenants import write_policies
from genq.common.tenants import DEFAULT_TENANT, TenantPolicy
from ops.localstack import settings_for, wait_for

from .gateway_support import sdk, start_gateway
from .support import run_genq

QUEUE = "cpu.tiny"
PER_MINUTE = 600  # 10 tokens a second: a 20-token job's refill takes 2 s
PROMPT = "abcd"  # one token, as a job's cost estimates it
REFILL_S = 30  # bound on waiting for a refill that takes seconds


@pytest.fixture
def env(genq_env: dict[str, str], databases: Iterator[int]) -> dict[str, str]:
    url = genq_env["GENQ_REDIS_URL"].rsplit("/", 1)[0] + f"/{next(databases)}"
    return {**genq_env, "GENQ_REDIS_URL": url}


@pytest.fixture
def client(env: dict[str, str]) -> Iterator[Client]:
    with Client(settings_for(env)) as c:
        yield c


def limit(client: Client, tenant: str, **policy: int) -> None:
    run(client.redis, write_policies(client.keys, {tenant: TenantPolicy.model_validate(policy)}))


def queued(client: Client) -> tuple[int, int]:
    """Task messages waiting in the model's queue, and job records: what a refusal leaves."""
    records = len(client.redis.keys(f"{client.keys.prefix}:{{*}}:job"))
    return run(client.redis, queues.depth(QUEUE)), records


def held(client: Client, tenant: str) -> int:
    """The tokens the tenant's bucket holds now (a take of nothing)."""
    return run(client.redis, buckets.take(client.keys, tenant, PER_MINUTE, 0)).held


def drain(client: Client, tenant: str = DEFAULT_TENANT) -> None:
    """One job that takes the whole minute's tokens."""
    client.submit(PROMPT, max_tokens=PER_MINUTE - 1, tenant=tenant)


def accepted(submit: Callable[[], object]) -> bool:
    try:
        submit()
    except QuotaExceeded:
        return False
    return True


def test_over_the_token_rate_nothing_is_queued_until_the_bucket_refills(client: Client) -> None:
    limit(client, "acme", tokens_per_minute=PER_MINUTE)
    drain(client, "acme")
    before = queued(client)
    with pytest.raises(QuotaExceeded, match=r"'acme'.*costs 20 tokens.*\(600\)") as refused:
        client.submit(PROMPT, max_tokens=19, tenant="acme")
    assert refused.value.retryable and 0 < refused.value.retry_after_s <= 2.0
    assert queued(client) == before
    assert held(client, "acme") < 20  # the refusal took nothing (nor did it give any)
    # Another tenant's bucket is its own.
    client.submit(PROMPT, max_tokens=19, tenant="other")
    wait_for(
        lambda: accepted(lambda: client.submit(PROMPT, max_tokens=19, tenant="acme")),
        REFILL_S,
        "acme's bucket to refill",
    )
    assert queued(client)[0] == before[0] + 2


def test_a_job_bigger_than_a_minutes_tokens_is_invalid_not_retried(client: Client) -> None:
    limit(client, "acme", tokens_per_minute=PER_MINUTE)
    with pytest.raises(InvalidJob, match=r"601 tokens.*tokens_per_minute \(600\).*max_tokens"):
        client.submit(PROMPT, max_tokens=PER_MINUTE, tenant="acme")
    assert queued(client) == (0, 0) and held(client, "acme") == PER_MINUTE


def test_the_async_client_is_held_to_the_same_bucket(client: Client) -> None:
    limit(client, "acme", tokens_per_minute=PER_MINUTE)
    drain(client, "acme")
    before = queued(client)

    async def submit() -> None:
        async with AsyncClient(client.settings) as face:
            await face.submit(PROMPT, max_tokens=19, tenant="acme")

    with pytest.raises(QuotaExceeded, match="'acme'"):
        asyncio.run(submit())
    assert queued(client) == before


def test_a_batch_is_charged_whole_before_any_job_of_it_is_queued(client: Client) -> None:
    limit(client, "acme", tokens_per_minute=PER_MINUTE)
    lines = [{"custom_id": f"r{i}", "prompt": PROMPT, "max_tokens": 19} for i in range(3)]
    first = client.submit_batch(lines, tenant="acme")  # 3 x 20 tokens
    assert first.submission.created == 3
    client.submit(PROMPT, max_tokens=PER_MINUTE - 61, tenant="acme")  # the rest of the minute
    before = queued(client)
    with pytest.raises(QuotaExceeded, match="this batch of 2 jobs costs 40 tokens"):
        client.submit_batch(lines[:2], batch_id="second", tenant="acme")
    assert queued(client) == before
    with pytest.raises(InvalidJob, match="no batch second"):
        client.batch("second")
    # A resubmission is charged for its lines, and given back those already in the batch.
    wait_for(lambda: held(client, "acme") >= 60, REFILL_S, "acme's bucket to refill")
    again = client.submit_batch(lines, batch_id=first.batch_id, tenant="acme")
    assert again.submission.existing == 3 and held(client, "acme") >= 60
    assert queued(client) == before


def test_max_queued_refuses_past_the_limit_until_jobs_leave_the_queue(client: Client) -> None:
    limit(client, "acme", max_queued=2)
    jobs = [client.submit(PROMPT, max_tokens=4, tenant="acme") for _ in range(2)]
    before = queued(client)
    with pytest.raises(QuotaExceeded, match=r"'acme': 2 jobs waiting.*max_queued \(2\)"):
        client.submit(PROMPT, max_tokens=4, tenant="acme")
    lines = [{"custom_id": "a", "prompt": PROMPT}]
    with pytest.raises(QuotaExceeded, match="max_queued"):
        client.submit_batch(lines, tenant="acme")
    assert queued(client) == before
    client.submit(PROMPT, max_tokens=4, tenant="other")  # its own count
    jobs[0].cancel()
    client.submit(PROMPT, max_tokens=4, tenant="acme")


BATCH_LINE = json.dumps(
    {
        "custom_id": "r1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 9},
    }
).encode()


def test_the_gateway_answers_429_with_retry_after(
    env: dict[str, str], client: Client, tmp_path: Path
) -> None:
    limit(client, DEFAULT_TENANT, tokens_per_minute=PER_MINUTE)  # a gateway without keys
    gateway = start_gateway(env, tmp_path)
    try:
        drain(client)
        before = queued(client)
        with sdk(gateway) as api, pytest.raises(openai.RateLimitError) as caught:
            api.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=399
            )
        body = caught.value.body
        assert isinstance(body, dict) and body["code"] == "quota_exceeded"
        assert "tokens_per_minute (600)" in body["message"]
        retry_after = caught.value.response.headers["retry-after"]
        assert retry_after.isdigit() and 1 <= int(retry_after) <= math.ceil(400 / 10)
        assert queued(client) == before
        with sdk(gateway) as api:  # an OpenAI batch refused so leaves no batch behind
            batches_before = [b.id for b in api.batches.list()]
            upload = api.files.create(file=("b.jsonl", BATCH_LINE), purpose="batch")
            with pytest.raises(openai.RateLimitError):
                api.batches.create(
                    input_file_id=upload.id,
                    endpoint="/v1/chat/completions",
                    completion_window="24h",
                )
            assert [b.id for b in api.batches.list()] == batches_before
        assert queued(client) == before
    finally:
        gateway.stop()


def test_the_cli_exits_1_with_the_reason_and_when_to_retry(
    env: dict[str, str], client: Client
) -> None:
    limit(client, DEFAULT_TENANT, tokens_per_minute=PER_MINUTE)
    drain(client)
    before = queued(client)
    proc = run_genq(env, "run", PROMPT, "-n", "499")  # 50 s of refill: longer than its start
    assert proc.returncode == 1, proc.stderr
    assert "tokens_per_minute (600)" in proc.stderr and "retry in" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert queued(client) == before
