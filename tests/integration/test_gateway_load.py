"""One gateway under 500 concurrent SSE streams on `tiny`: every stream ends with its text
and `[DONE]`, or was refused with OpenAI's JSON body (429 or 503) before its job was queued;
no plain-text error, no stream cut, no job left running for nobody.

redis-py's default pool once failed this past about 99 streams: MaxConnectionsError as 503s,
streams cut mid-way, their jobs running for no one (genq.common.connection, followers.py)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable

import httpx

from genq import Client
from genq.common.settings import Settings
from genq.common.store import leases, run
from ops.localstack import wait_for

from .conftest import Stack
from .gateway_support import TIMEOUT_S, start_gateway

STREAMS = 500
MAX_TOKENS = 8


async def follow(http: httpx.AsyncClient, n: int, seen: Counter[str], jobs: list[str]) -> None:
    body = {"model": "tiny", "prompt": f"p{n}", "max_tokens": MAX_TOKENS, "ignore_eos": True}
    async with http.stream(
        "POST", "/v1/completions", json={**body, "seed": n, "stream": True}
    ) as answer:
        if answer.status_code != 200:
            error = json.loads(await answer.aread())["error"]  # JSON, not plain text
            seen[f"{answer.status_code} {error['code']}"] += 1
            return
        jobs.append(answer.headers["x-genq-job-id"])
        lines = [line async for line in answer.aiter_lines() if line.startswith("data: ")]
        texts = [json.loads(line[6:])["choices"][0]["text"] for line in lines[:-1]]
        ended = lines[-1:] == ["data: [DONE]"] and bool("".join(texts))
        seen["done" if ended else f"cut after {lines[-1:]}"] += 1


async def follow_all(url: str) -> tuple[Counter[str], list[str]]:
    seen: Counter[str] = Counter()
    jobs: list[str] = []
    limits = httpx.Limits(max_connections=STREAMS, max_keepalive_connections=STREAMS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as http:
        await asyncio.gather(*(follow(http, n, seen, jobs) for n in range(STREAMS)))
    return seen, jobs


def running(settings: Settings) -> list[str]:
    with Client(settings) as client:
        return run(client.redis, leases.lapsed(client.keys, 2**53, STREAMS))


def test_one_gateway_serves_500_concurrent_streams(make_stack: Callable[[], Stack]) -> None:
    stack = make_stack()
    stack.relay(), stack.worker("a", "--models", "tiny", "--slots", "16")
    gateway = start_gateway(stack.env, stack.logs)
    stack.procs.append(gateway)
    seen, jobs = asyncio.run(follow_all(gateway.url))
    refused = sum(n for outcome, n in seen.items() if outcome[:3] in {"429", "503"})
    assert seen["done"] + refused == STREAMS, seen
    assert seen["done"] == len(jobs)
    wait_for(lambda: not running(stack.settings), TIMEOUT_S, "no job running after the streams")
