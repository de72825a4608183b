"""Bundles: a batch's short jobs share task messages (one claim, one lease heartbeat, one
broker fetch for several jobs), and each still runs, streams, ends and resumes as a job of its
own."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import Any

from genq import Client
from genq.common.celery_config import BUNDLE_TASK
from genq.common.frames import (
    ContinuationFrame,
    DoneFrame,
    Frame,
    TokenFrame,
    WindowFrame,
)
from genq.common.schemas import JobRecord, JobState
from ops.localstack import wait_for
from tests import state
from tests.state import job_record

from .conftest import Stack

SHORT: dict[str, Any] = {"prompt": "Once upon", "max_tokens": 8, "ignore_eos": True}


def lines(count: int, **fields: Any) -> list[dict[str, Any]]:
    return [{"custom_id": f"j{n}", **SHORT, "seed": n, **fields} for n in range(count)]


def broker_tasks(client: Client) -> list[dict[str, Any]]:
    """The headers of the task messages waiting in the stack's broker queues."""
    out = []
    for key in client.redis.scan_iter(match="[cg]pu*"):
        for raw in client.redis.lrange(str(key), 0, -1):
            out.append(json.loads(raw)["headers"])
    return out


def record(client: Client, job_id: str) -> JobRecord:
    return job_record(client.redis, client.keys, job_id)


def stream_frames(client: Client, job_id: str) -> list[Frame]:
    return state.stream_frames(client.redis, client.keys, job_id)


def test_a_batch_of_short_jobs_goes_out_in_bundles_and_each_job_ends_as_if_run_alone(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()
    stack.relay()
    with Client(stack.settings) as client:
        batch = client.submit_batch(lines(80))
        tasks = broker_tasks(client)  # no worker yet: every message still waits
        bundles = [t for t in tasks if t["task"] == BUNDLE_TASK]
        assert 0 < len(tasks) < 80
        assert bundles and all(t["argsrepr"].startswith("jobs=") for t in bundles)
        stack.worker("a")
        status = batch.wait(timeout=120)
        assert (status.succeeded, status.total) == (80, 80)
        results = list(batch.results())
        assert [r.custom_id for r in results] == [f"j{n}" for n in range(80)]
        for n in (0, 41, 79):
            alone = client.submit(**SHORT, seed=n).result(timeout=60)
            assert results[n].text == alone.text
        for line in results[:3]:
            frames = stream_frames(client, line.job_id)
            assert [f.seq for f in frames] == list(range(1, len(frames) + 1))
            assert isinstance(frames[0], ContinuationFrame)
            assert isinstance(frames[-2], WindowFrame) and isinstance(frames[-1], DoneFrame)
            text = "".join(f.data.text for f in frames if isinstance(f, TokenFrame))
            assert text == line.text


def test_a_worker_killed_mid_bundle_has_the_bundles_unfinished_jobs_run_by_another(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()
    stack.env["GENQ_BUNDLE_TOKENS"] = "100000"  # bundles of jobs long enough to kill mid-way
    stack.relay()
    first = stack.worker("a")
    with Client(stack.settings) as client:
        # 48 jobs go out as 16 bundles of 3, the first bundle taken first; when its first job
        # has ended, the second is running and the third still waits its turn
        batch = client.submit_batch(lines(48, max_tokens=400, window_tokens=40))
        ids = list(batch.job_ids())
        wait_for(lambda: record(client, ids[0]).state == JobState.SUCCEEDED, 60, "a job")
        first.signal(signal.SIGKILL)
        held = [i for i in ids if record(client, i).state == JobState.RUNNING]
        waiting = [i for i in held if not state.stream_length(client.redis, client.keys, i)]
        assert held, "the killed worker held no job"
        assert waiting, "no job of the killed bundle was still waiting its turn"
        stack.worker("b")
        status = batch.wait(timeout=180)
        assert (status.succeeded, status.total) == (48, 48)
        for job_id in held:
            resumed = record(client, job_id)
            assert (resumed.epoch, resumed.worker.partition("@")[0]) == (1, "b")
        for line in batch.results():
            assert line.usage is not None and line.usage.completion_tokens == 400
