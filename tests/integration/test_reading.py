"""Reading a job's stream: replay, follow, attach from anywhere, long jobs in windows."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from genq import Client, InvalidJob
from genq.common.frames import ContinuationFrame, DoneFrame, TokenFrame, WindowFrame
from genq.common.schemas import JobRecord, JobState
from genq.producer.streams import JobStream
from ops.localstack import wait_for

from .support import run_genq

LONG_JOB: dict[str, Any] = {
    "prompt": "long",
    "max_tokens": 4000,
    "window_tokens": 100,
    "seed": 5,
    "ignore_eos": True,
}


def test_reader_attaching_after_the_job_finished_replays_it_whole(client: Client) -> None:
    job = client.submit("replay", max_tokens=80, seed=3, ignore_eos=True)
    first = list(job.stream(timeout=60))
    with client.job(job.job_id).stream(timeout=60) as replay:
        again = list(replay)
        assert again == first
        assert replay.text == replay.result.text == job.result().text


def test_reader_attaching_mid_job_catches_up_and_follows(client: Client) -> None:
    job = client.submit(**LONG_JOB)
    stream_key = client.keys.stream(job.job_id)
    wait_for(lambda: client.redis.xlen(stream_key) >= 20, 30, "the job's first frames")
    with client.job(job.job_id).stream(timeout=60) as late:
        frames = [next(late)]
        state = JobRecord.from_hash(client.redis.hgetall(client.keys.job(job.job_id))).state
        frames.extend(late)
        assert state == JobState.RUNNING, "attached after the job had already finished"
        assert frames[0].seq == 1, "a late reader replays from the start"
        assert late.text == late.result.text == job.result(timeout=60).text


def test_job_ten_times_longer_than_the_context_runs_in_order_in_windows(client: Client) -> None:
    n_ctx, window = 256, 128
    job = client.submit(
        "ten contexts", max_tokens=10 * n_ctx, window_tokens=window, seed=9, ignore_eos=True
    )
    frames = list(job.stream(timeout=120))
    result = job.result()
    windows = [f.data for f in frames if isinstance(f, WindowFrame)]
    starts = [f.data.window for f in frames if isinstance(f, ContinuationFrame)]
    assert starts == [w.window for w in windows] == list(range(10 * n_ctx // window))
    assert [w.tokens_total for w in windows] == [window * (k + 1) for k in range(len(windows))]
    assert result.usage.completion_tokens == 10 * n_ctx
    assert "".join(w.text for w in windows) == result.text
    ids = [t for f in frames if isinstance(f, TokenFrame) for t in f.data.token_ids]
    assert ids == [t for w in windows for t in w.token_ids]
    assert windows[-1].finish_reason == result.finish_reason == "length"


def test_result_is_not_ready_until_the_stream_is_consumed(client: Client) -> None:
    from genq import GenqError

    job = client.submit("ready", max_tokens=30, seed=2, ignore_eos=True)
    stream = job.stream(timeout=60)
    with pytest.raises(GenqError, match="once the stream is consumed"):
        _ = stream.result
    lengths = [len(stream.text) for _ in stream]
    assert lengths == sorted(lengths) and lengths[-1] == len(stream.result.text)


def test_closing_a_stream_early_leaves_the_job_running(client: Client) -> None:
    job = client.submit("close", max_tokens=400, window_tokens=100, seed=2, ignore_eos=True)
    stream = job.stream(timeout=60)
    next(stream)
    stream.close()
    assert list(stream) == []
    assert client.job(job.job_id).result(timeout=60).usage.completion_tokens == 400


def test_reading_can_start_at_a_given_frame(client: Client) -> None:
    job = client.submit("from", max_tokens=60, seed=2, ignore_eos=True)
    everything = list(job.stream(timeout=60))
    later = list(client.job(job.job_id).stream(from_id="0-5", timeout=60))
    assert later == everything[4:]
    assert isinstance(later[-1], DoneFrame)


def test_unknown_job_id_is_a_clear_error(client: Client) -> None:
    with pytest.raises(InvalidJob, match="never submitted"):
        client.job("0" * 32)
    with pytest.raises(InvalidJob, match="not a genq job id"):
        client.job("genq:*")


def test_tail_prints_the_text_of_a_finished_or_a_just_submitted_job(
    client: Client, genq_env: dict[str, str]
) -> None:
    done = client.submit("tail", max_tokens=40, seed=1, ignore_eos=True)
    result = done.result(timeout=60)
    proc = run_genq(genq_env, "tail", done.job_id, "--json")
    assert proc.returncode == 0, proc.stderr
    frames = [json.loads(line) for line in proc.stdout.splitlines()]
    assert frames[-1]["type"] == "done" and frames[-1]["data"]["text"] == result.text

    running = client.submit(**LONG_JOB)
    started = time.monotonic()
    proc = run_genq(genq_env, "tail", running.job_id)
    assert proc.returncode == 0, proc.stderr
    # The capture reads text with universal newlines: the model's stray \r become \n.
    expected = running.result(timeout=60).text.replace("\r\n", "\n").replace("\r", "\n")
    assert proc.stdout == expected  # piped: exactly the text, no newline added
    assert "4000 tokens" in proc.stderr and time.monotonic() - started < 60


def test_tail_of_an_unknown_job_exits_2(genq_env: dict[str, str]) -> None:
    proc = run_genq(genq_env, "tail", "f" * 32)
    assert proc.returncode == 2 and "never submitted" in proc.stderr


def test_stream_object_is_iterable_once(client: Client) -> None:
    job = client.submit("once", max_tokens=5, seed=1, ignore_eos=True)
    stream: JobStream = job.stream(timeout=60)
    assert len(list(stream)) > 0
    assert list(stream) == []
