"""A worker host on a slow, lossy link to Redis (50 ms each way, 1% loss: netem where the
kernel has it, else a delaying proxy, ops/slowlink.py): its jobs still complete exactly, with
the texts a worker on a clean link gives."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from genq import Client
from ops.slowlink import SlowLink, slow_link
from tests.hosts.conftest import HostStack, note

JOB: dict[str, Any] = {"max_tokens": 400, "window_tokens": 100, "ignore_eos": True}
JOBS = 4


@pytest.fixture
def slow(stack: HostStack) -> Iterator[SlowLink]:
    redis = urlsplit(stack.env["GENQ_REDIS_URL"])
    assert redis.hostname is not None and redis.port is not None
    link = slow_link(stack.network, "w1", redis.hostname, redis.port)
    try:
        yield link
    finally:
        link.remove()
        note(f"slow link: {link.summary()}")


def holders(client: Client, job_ids: list[str]) -> set[str]:
    return {client.record(job_id).worker.partition("@")[0] for job_id in job_ids}


def run_jobs(client: Client, specs: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The jobs' texts, and the workers' hosts that ran them; each stream equals its result."""
    jobs = [client.submit(**spec) for spec in specs]
    texts = [job.result(timeout=300).text for job in jobs]
    for job, text in zip(jobs, texts, strict=True):
        with client.job(job.job_id).stream(timeout=60) as stream:
            for _ in stream:
                pass
        assert stream.text == text
    return texts, sorted(holders(client, [job.job_id for job in jobs]))


def test_jobs_complete_exactly_over_a_slow_lossy_link(stack: HostStack, slow: SlowLink) -> None:
    stack.relay()
    url = slow.url_for(stack.env["GENQ_REDIS_URL"])
    w1 = stack.worker("w1", "--slots", str(JOBS), "--models", "tiny", GENQ_REDIS_URL=url)
    specs = [{**JOB, "prompt": f"slow {i}", "seed": i} for i in range(JOBS)]
    with stack.client() as client:
        slow_texts, slow_hosts = run_jobs(client, specs)
        assert slow_hosts == ["w1"]
        w1.stop()
        stack.worker("w2", "--slots", str(JOBS), "--models", "tiny")
        assert run_jobs(client, specs) == (slow_texts, ["w2"])
