"""Workers die, pause and relays come and go: jobs resume from the last token their stream
holds, with the text an uninterrupted run has, and a reader of the stream always ends with the
job's exact final text."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import pytest

from genq import Client, JobFailed
from genq.common.frames import (
    ContinuationFrame,
    ErrorFrame,
    Frame,
    ResumeFrame,
    TokenFrame,
    parse_frame,
)
from genq.common.schemas import JobRecord, JobState
from genq.common.store import channels, run, streams
from tests.state import job_record, stream_frames

from .conftest import Stack

WINDOW = 100
# Tokens a resume may compute again: only what never reached the stream (the chunk being cut,
# 16 tokens by default, and one in flight); never the window.
RECOMPUTED_MAX = 32
# Forty windows: long enough to be killed in the middle, short enough to run in a second.
JOB: dict[str, Any] = {
    "prompt": "failover",
    "max_tokens": 4000,
    "window_tokens": WINDOW,
    "seed": 77,
    "ignore_eos": True,
}


def entries(client: Client, job_id: str) -> list[Frame]:
    return stream_frames(client.redis, client.keys, job_id)


def record(client: Client, job_id: str) -> JobRecord:
    return job_record(client.redis, client.keys, job_id)


def follow(client: Client, job_id: str, act: Callable[[Frame], None]) -> tuple[str, Any]:
    """Read the job's stream to its end, calling `act` on every frame; (text, result)."""
    with client.job(job_id).stream(timeout=90) as stream:
        for frame in stream:
            act(frame)
        return stream.text, stream.result


def at_window(window: int, epoch: int, then: Callable[[], None]) -> Callable[[Frame], None]:
    """An action that runs once, when `window` of `epoch` starts."""
    fired: list[bool] = []

    def act(frame: Frame) -> None:
        hit = isinstance(frame, ContinuationFrame) and (frame.epoch, frame.data.window) == (
            epoch,
            window,
        )
        if hit and not fired:
            fired.append(True)
            then()

    return act


def uninterrupted(client: Client) -> str:
    return client.submit(**JOB).result(timeout=90).text


def assert_resumed_cleanly(client: Client, job_id: str, epochs: int) -> None:
    """Every epoch after the first starts with `resume`; no entry of an older epoch follows
    it; and each resume keeps what the dead attempt streamed but for its last chunk or two."""
    frames = entries(client, job_id)
    assert [f.epoch for f in frames] == sorted(f.epoch for f in frames)
    resumes = [f for f in frames if isinstance(f, ResumeFrame)]
    assert [r.epoch for r in resumes] == list(range(1, epochs))
    started_at = 0  # tokens the dying attempt had been handed
    for resume in resumes:
        first = frames.index(resume)
        assert frames[first - 1].epoch == resume.epoch - 1
        assert all(f.epoch >= resume.epoch for f in frames[first:])
        lost = [f for f in frames[:first] if f.epoch == resume.epoch - 1]
        produced = started_at + sum(
            len(f.data.token_ids) for f in lost if isinstance(f, TokenFrame)
        )
        assert resume.data.from_window >= 1
        assert 0 <= produced - resume.data.committed_tokens <= RECOMPUTED_MAX
        started_at = resume.data.committed_tokens


def test_resumes_on_another_worker_after_sigkill(make_stack: Callable[[], Stack]) -> None:
    stack = make_stack()
    stack.relay()
    stack.worker("a"), stack.worker("b")
    with Client(stack.settings) as client:
        expected = uninterrupted(client)
        job = client.submit(**JOB)
        kill = at_window(3, 0, lambda: stack.holder(client, job.job_id).signal(signal.SIGKILL))
        text, result = follow(client, job.job_id, kill)
        assert result.text == expected
        assert text == expected
        assert_resumed_cleanly(client, job.job_id, epochs=2)
        done = record(client, job.job_id)
        assert (done.state, done.epoch, done.attempts) == (JobState.SUCCEEDED, 1, 2)


def test_resumes_twice_after_two_kills(make_stack: Callable[[], Stack]) -> None:
    stack = make_stack()
    stack.relay()
    stack.worker("a"), stack.worker("b"), stack.worker("c")
    with Client(stack.settings) as client:
        expected = uninterrupted(client)
        job = client.submit(**JOB)
        first = at_window(3, 0, lambda: stack.holder(client, job.job_id).signal(signal.SIGKILL))
        second: list[Callable[[Frame], None]] = []

        def act(frame: Frame) -> None:
            first(frame)
            if isinstance(frame, ResumeFrame) and frame.epoch == 1:
                kill = lambda: stack.holder(client, job.job_id).signal(signal.SIGKILL)  # noqa: E731
                second.append(at_window(frame.data.from_window + 2, 1, kill))
            for action in second:
                action(frame)

        text, result = follow(client, job.job_id, act)
        assert result.text == text == expected
        assert_resumed_cleanly(client, job.job_id, epochs=3)
        assert record(client, job.job_id).attempts == 3


def test_job_that_exhausts_its_attempts_fails_cleanly(make_stack: Callable[[], Stack]) -> None:
    stack = make_stack()
    stack.relay(GENQ_MAX_ATTEMPTS="1")
    stack.worker("a")
    with Client(stack.settings) as client:
        job = client.submit(**JOB)
        kill = at_window(3, 0, lambda: stack.holder(client, job.job_id).signal(signal.SIGKILL))
        with pytest.raises(JobFailed) as failed:
            follow(client, job.job_id, kill)
        assert failed.value.error_code == "attempts_exhausted"
        last = entries(client, job.job_id)[-1]
        assert isinstance(last, ErrorFrame) and last.epoch == 1
        assert record(client, job.job_id).state == JobState.FAILED


def test_paused_worker_cannot_write_into_the_newer_epoch(make_stack: Callable[[], Stack]) -> None:
    stack = make_stack()
    stack.relay()
    stack.worker("a"), stack.worker("b")
    with Client(stack.settings) as client:
        expected = uninterrupted(client)
        job = client.submit(**JOB)
        paused: list[Any] = []

        def act(frame: Frame) -> None:
            if not paused and isinstance(frame, ContinuationFrame) and frame.data.window == 3:
                paused.append(stack.holder(client, job.job_id))
                paused[0].signal(signal.SIGSTOP)
            elif isinstance(frame, ResumeFrame) and paused:
                paused[0].signal(signal.SIGCONT)  # wakes up past its lease, still generating

        text, result = follow(client, job.job_id, act)
        assert result.text == text == expected
        assert_resumed_cleanly(client, job.job_id, epochs=2)
        assert record(client, job.job_id).epoch == 1
        assert "superseded" in paused[0].log.read_text()


def test_two_relays_write_every_entry_exactly_once(make_stack: Callable[[], Stack]) -> None:
    stack = make_stack()
    stack.relay("relay-1"), stack.relay("relay-2")
    stack.worker("a")
    with Client(stack.settings) as client:
        job = client.submit(**JOB)
        text, result = follow(client, job.job_id, lambda frame: None)
        frames = entries(client, job.job_id)
        assert [f.seq for f in frames] == list(range(1, len(frames) + 1))
        assert text == result.text
        checkpointed = run(client.redis, streams.checkpointed(client.keys, job.job_id))
        assert checkpointed == JOB["max_tokens"] // WINDOW


def test_stream_stays_complete_when_one_of_two_relays_is_killed(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()
    first = stack.relay("relay-1")
    stack.relay("relay-2")
    stack.worker("a")
    with Client(stack.settings) as client:
        job = client.submit(**JOB)
        text, result = follow(
            client, job.job_id, at_window(3, 0, lambda: first.signal(signal.SIGKILL))
        )
        frames = entries(client, job.job_id)
        assert [f.seq for f in frames] == list(range(1, len(frames) + 1))
        assert text == result.text


def test_reader_ends_with_the_final_text_when_no_relay_ran_for_part_of_the_job(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()
    relay = stack.relay()
    stack.worker("a")
    # Long enough that the job still runs when the new relay is up: the frames published
    # while no relay ran must be followed by some that one wrote.
    job_spec = {**JOB, "max_tokens": 12_000}
    with Client(stack.settings) as client:
        expected = client.submit(**job_spec).result(timeout=90).text
        job = client.submit(**job_spec)
        live = channels.subscribe(client.redis, streams.channel(client.keys, job.job_id))

        def relay_down_for_a_while() -> None:
            relay.signal(signal.SIGKILL)
            while True:  # restart it once the worker is ten windows further, seen live
                raw = live.message(10)
                frame = parse_frame(raw) if raw is not None else None
                if isinstance(frame, ContinuationFrame) and frame.data.window >= 13:
                    break
            stack.relay("relay-again")

        text, result = follow(client, job.job_id, at_window(3, 0, relay_down_for_a_while))
        live.close()
        assert result.text == text == expected
        seqs = [f.seq for f in entries(client, job.job_id)]
        assert seqs != list(range(1, len(seqs) + 1)), "the stream should have a hole"
