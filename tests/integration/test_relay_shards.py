"""Relays sharing the work (GENQ_RELAY_SHARD `k/n`): on a real Redis every channel a job
could have is heard by exactly one share's pattern; two sharded relays beside a real worker
stream every job whole, each moving its own share and no frame twice; and with both reaping,
a killed worker's job is resumed once."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import pytest
import redis

from genq import BatchHandle, Client, JobHandle
from genq.common.connection import connect_bytes
from genq.common.frames import DoneFrame, TokenFrame
from genq.common.ids import new_job_id
from genq.common.schemas import JobState
from genq.common.settings import Settings
from genq.common.store import channels, run, streams
from genq.common.store.keys import Keys
from ops.localstack import free_port
from tests.state import job_record, stream_frames

from .conftest import Stack
from .test_failover import JOB, assert_resumed_cleanly, at_window, follow, uninterrupted
from .test_metrics import scrape, total

# A prefix of its own: no relay of the session subscribes to these channels.
KEYS = Keys(f"shards-{new_job_id()[:8]}")
# Every first character a channel could have, as redis-py sends it (UTF-8): every byte up to
# 0x7f, the lead bytes of Latin-1's upper half, and a character of three bytes.
FIRSTS = [chr(code) for code in range(256)] + ["中"]
SHORT = {"prompt": "Once upon a time", "max_tokens": 12, "ignore_eos": True}
FRAMES = "genq_relay_frames_total"
REQUEUES = "genq_relay_requeues_total"


@contextmanager
def share_subscribers(settings: Settings, shares: int) -> Iterator[None]:
    """One pattern subscription per share, each confirmed by Redis before this yields."""
    client = connect_bytes(settings)
    with ExitStack() as held:
        for share in range(1, shares + 1):
            messages = channels.psubscribe(client, streams.channel_pattern(KEYS, share, shares))
            held.callback(messages.close)
            messages.read(10.0, 1)  # returns once the subscription is confirmed
        yield
    client.close()


@pytest.mark.parametrize("shares", [2, 3, 16])
def test_every_channel_is_heard_by_exactly_one_share(
    settings: Settings, redis_client: redis.Redis, shares: int
) -> None:
    with share_subscribers(settings, shares):
        heard = {
            first: run(redis_client, channels.publish(streams.channel(KEYS, first + "0"), "x"))
            for first in FIRSTS
        }
    assert {first: count for first, count in heard.items() if count != 1} == {}


def submit_until_both_shares(client: Client) -> list[BatchHandle[JobHandle]]:
    """Batches of short jobs until each of two shares holds one job at least (job ids are
    random: a few batches at most)."""
    batches: list[BatchHandle[JobHandle]] = []
    firsts: set[str] = set()
    while not all(firsts & set(streams.share_characters(k, 2)) for k in (1, 2)):
        lines = [{**SHORT, "seed": n, "custom_id": f"j{n}"} for n in range(6)]
        batches.append(client.submit_batch(lines))
        firsts |= {job_id[0] for job_id in batches[-1].job_ids()}
    return batches


def sharded_relays(stack: Stack) -> list[int]:
    """Relays 1/2 and 2/2 on the stack, on its own key prefix; their metrics ports."""
    stack.env["GENQ_KEY_PREFIX"] = KEYS.prefix
    ports = [free_port(), free_port()]
    for share, port in enumerate(ports, start=1):
        env = {"GENQ_RELAY_SHARD": f"{share}/2", "GENQ_RELAY_METRICS_PORT": str(port)}
        stack.relay(f"relay{share}", **env)
    return ports


def test_two_sharded_relays_stream_every_job_whole_each_moving_its_share(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()
    ports = sharded_relays(stack)
    stack.worker("a", "--models", "tiny")
    with Client(stack.settings) as client:
        batches = submit_until_both_shares(client)
        streamed = 0
        for batch in batches:
            status = batch.wait(timeout=120)
            assert status.succeeded == status.total
            for result in batch.results():
                frames = stream_frames(client.redis, client.keys, result.job_id)
                assert [f.seq for f in frames] == list(range(1, len(frames) + 1))
                assert isinstance(frames[-1], DoneFrame)
                assert "".join(f.data.text for f in frames if isinstance(f, TokenFrame)) == (
                    result.text
                )
                streamed += len(frames)
    moved = [total(scrape(port), FRAMES) for port in ports]
    assert all(count > 0 for count in moved), moved
    assert sum(moved) == streamed  # each frame moved by one relay: none twice, none lost


def test_a_killed_workers_job_is_resumed_once_by_two_reaping_relays(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()
    ports = sharded_relays(stack)  # both reap every lease: one script decides each
    stack.worker("a", "--models", "tiny"), stack.worker("b", "--models", "tiny")
    with Client(stack.settings) as client:
        expected = uninterrupted(client)
        job = client.submit(**JOB)
        kill = at_window(3, 0, lambda: stack.holder(client, job.job_id).signal(signal.SIGKILL))
        text, result = follow(client, job.job_id, kill)
        assert result.text == text == expected
        assert_resumed_cleanly(client, job.job_id, epochs=2)
        done = job_record(client.redis, client.keys, job.job_id)
        assert (done.state, done.epoch, done.attempts) == (JobState.SUCCEEDED, 1, 2)
    assert sum(total(scrape(port), REQUEUES) for port in ports) == 1
