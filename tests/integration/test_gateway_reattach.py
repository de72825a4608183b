"""Gateway streams survive: a worker SIGKILLed mid-stream (the job resumes elsewhere, the
client's stream goes on with no gap or repeat), a gateway restarted mid-stream (the client
reattaches with Last-Event-ID on another gateway process), and a client that disconnects
(its job is cancelled only when no client reattached within GENQ_REATTACH_GRACE_S)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from genq import Client
from genq.common.frames import ResumeFrame
from genq.common.schemas import JobState
from genq.common.settings import Settings
from genq.common.store import gateway as gateway_store
from genq.common.store import run
from genq.producer.gateway.streams import SWEEP_INTERVAL_S
from ops.localstack import Gateway, Relay, Worker, wait_for

from .conftest import Stack
from .gateway_support import TIMEOUT_S, Event, position, record, sdk, sse, start_gateway
from .test_failover import JOB, entries

GRACE_S = 1.0
LONG = {"model": "tiny", "prompt": "a", "max_tokens": 1_000_000, "seed": 8, "ignore_eos": True}


@pytest.fixture(scope="module")
def gateway(
    genq_env: dict[str, str], worker: Worker, relay: Relay, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    logs = tmp_path_factory.mktemp("logs")
    proc = start_gateway(genq_env, logs, GENQ_REATTACH_GRACE_S=str(GRACE_S))
    yield proc
    proc.stop()


def gateway_of(stack: Stack, name: str) -> Gateway:
    proc = start_gateway(stack.env, stack.logs, name)
    stack.procs.append(proc)
    return proc


def test_a_worker_sigkill_mid_stream_leaves_the_streamed_text_whole(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()
    stack.relay()
    stack.worker("a"), stack.worker("b")
    gateway = gateway_of(stack, "gateway")
    with Client(stack.settings) as client:
        expected = client.submit(**JOB).result(timeout=TIMEOUT_S).text
        with sdk(gateway) as api:
            extra = {"window_tokens": JOB["window_tokens"], "ignore_eos": True}
            raw = api.completions.with_streaming_response.create(
                model="tiny",
                prompt=JOB["prompt"],
                max_tokens=JOB["max_tokens"],
                seed=JOB["seed"],
                stream=True,
                extra_body=extra,
            )
            with raw as response:
                job_id = response.headers["x-genq-job-id"]
                texts, killed = [], False
                for chunk in response.parse():
                    texts.append(chunk.choices[0].text if chunk.choices else "")
                    if not killed and len(texts) == 20:
                        stack.holder(client, job_id).signal(signal.SIGKILL)
                        killed = True
        assert any(isinstance(f, ResumeFrame) for f in entries(client, job_id)), "no resume"
    assert "".join(texts) == expected


def read_until(events: Iterator[Event], count: int) -> list[Event]:
    """The next events up to the `count`th that carries text."""
    got: list[Event] = []
    for event in events:
        got.append(event)
        if sum(1 for e in got if e.text) >= count:
            break
    return got


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
def test_a_client_reattaches_after_a_gateway_restart_with_no_gap_or_repeat(
    make_stack: Callable[[], Stack], stop: signal.Signals
) -> None:
    """Killed (SIGKILL) or stopped (SIGTERM: it ends its streams and counts their clients out;
    the reattach within the grace, 30 s, keeps the job)."""
    stack = make_stack()
    stack.relay()
    stack.worker("a")
    first = gateway_of(stack, "first")
    body: dict[str, Any] = {**JOB, "model": "tiny", "stream": True}
    with httpx.Client(timeout=TIMEOUT_S) as http:
        with http.stream("POST", f"{first.url}/v1/completions", json=body) as response:
            job_id = response.headers["x-genq-job-id"]
            before = read_until(sse(response), 10)
            first.signal(stop)
        second = gateway_of(stack, "second")
        headers = {"Last-Event-ID": before[-1].id}
        url = f"{second.url}/v1/jobs/{job_id}/stream"
        with http.stream("GET", url, headers=headers) as response:
            assert response.headers["x-genq-job-id"] == job_id
            after = list(sse(response))
    assert after[-1].data == "[DONE]"
    ids = [position(e.id) for e in before + after if e.data != "[DONE]"]
    assert ids == sorted(ids) and position(after[0].id) > position(before[-1].id)
    job = record(stack.settings, job_id)
    assert job.result is not None
    assert "".join(e.text for e in before + after) == job.result.text
    assert job.state == JobState.SUCCEEDED


def test_reattaching_by_query_parameter_continues_the_chat_stream(gateway: Gateway) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64}
    body |= {"seed": 6, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT_S) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            job_id = response.headers["x-genq-job-id"]
            whole = list(sse(response))
        cut = next(i for i, e in enumerate(whole) if e.text) + 1
        url = f"/v1/jobs/{job_id}/stream?last_event_id={whole[cut - 1].id}"
        with http.stream("GET", url) as response:
            rest = list(sse(response))
    assert rest == whole[cut:]
    assert rest[-2].json["usage"]["completion_tokens"] > 0 and rest[-2].json["choices"] == []


def stream_then_leave(http: httpx.Client, body: dict[str, Any]) -> tuple[str, str]:
    """Start a stream, read its first text, disconnect: (job id, last event id)."""
    with http.stream("POST", "/v1/completions", json=body) as response:
        job_id = response.headers["x-genq-job-id"]
        last = read_until(sse(response), 1)[-1].id
    return job_id, last


def deadline(settings: Settings, job_id: str) -> float | None:
    with Client(settings) as client:
        return run(client.redis, gateway_store.deadlines(client.keys, [job_id]))[0]


def test_a_disconnected_stream_is_cancelled_after_the_grace(
    gateway: Gateway, settings: Settings
) -> None:
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT_S) as http:
        left_at = time.time()
        job_id, _ = stream_then_leave(http, {**LONG, "stream": True})
    wait_for(lambda: deadline(settings, job_id) is not None, TIMEOUT_S, "a reattach deadline")
    wait_for(lambda: record(settings, job_id).state == JobState.CANCELLED, TIMEOUT_S, "the cancel")
    assert time.time() - left_at >= GRACE_S  # not before the grace
    assert deadline(settings, job_id) is None


def test_a_stream_reattached_within_the_grace_is_not_cancelled(
    gateway: Gateway, settings: Settings
) -> None:
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT_S) as http:
        job_id, last = stream_then_leave(http, {**LONG, "stream": True})
        wait_for(lambda: deadline(settings, job_id) is not None, TIMEOUT_S, "a deadline")
        url = f"/v1/jobs/{job_id}/stream"
        with http.stream("GET", url, headers={"Last-Event-ID": last}) as response:
            events = sse(response)
            read_until(events, 1)
            assert deadline(settings, job_id) is None
            # Past the grace, and past the sweeps that would have cancelled it: still running.
            passed = time.time() + GRACE_S + 4 * SWEEP_INTERVAL_S
            wait_for(lambda: time.time() > passed and bool(read_until(events, 1)), 30, "time")
            assert record(settings, job_id).state == JobState.RUNNING
            http.post(f"/v1/jobs/{job_id}/cancel")
            rest = list(events)
    assert rest[-1].data == "[DONE]"
    assert record(settings, job_id).state == JobState.CANCELLED


def test_with_no_grace_a_disconnected_stream_is_cancelled_at_once(
    genq_env: dict[str, str], worker: Worker, relay: Relay, tmp_path: Path, settings: Settings
) -> None:
    gateway = start_gateway(genq_env, tmp_path, GENQ_REATTACH_GRACE_S="0")
    try:
        with httpx.Client(base_url=gateway.url, timeout=TIMEOUT_S) as http:
            job_id, _ = stream_then_leave(http, {**LONG, "stream": True})
        wait_for(
            lambda: record(settings, job_id).state == JobState.CANCELLED, TIMEOUT_S, "the cancel"
        )
        assert deadline(settings, job_id) is None  # cancelled by the gateway it left, no sweep
    finally:
        gateway.stop()
