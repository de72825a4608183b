"""Batches and the job lifecycle: JSONL in (genq and OpenAI lines), results out in input order,
idempotent resubmission, cancel, priorities and expiry, against the real stack."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from genq import STOP, BatchHandle, Client, JobFailed, JobHandle
from genq.common.errors import InvalidBatch
from genq.common.frames import ErrorFrame, TokenFrame
from genq.common.schemas import FinishReason, JobRecord, JobState
from genq.common.store import jobs, run, streams
from ops.localstack import wait_for
from tests.state import job_record, stream_length

from .conftest import Stack
from .support import run_genq

# Runs until it is cancelled: what keeps the session's one worker busy.
ENDLESS: dict[str, Any] = {
    "prompt": "busy",
    "max_tokens": 1_000_000,
    "window_tokens": 200,
    "ignore_eos": True,
}
MIXED: list[dict[str, Any]] = [
    {"custom_id": "plain", "prompt": "Once upon", "max_tokens": 12, "seed": 1},
    {
        "custom_id": "chat",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "tiny",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 9,
            "seed": 2,
        },
    },
    {
        "custom_id": "completion",
        "method": "POST",
        "url": "/v1/completions",
        "body": {"model": "tiny", "prompt": ["The"], "max_completion_tokens": 7, "seed": 3},
    },
    {"custom_id": "last", "prompt": "And then", "max_tokens": 5, "seed": 4, "ignore_eos": True},
]


def record(client: Client, job_id: str) -> JobRecord:
    return job_record(client.redis, client.keys, job_id)


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


def job_keys(client: Client) -> set[str]:
    return {str(k) for k in client.redis.scan_iter(match=f"{client.keys.prefix}:{{*}}:job")}


def broker_messages(client: Client) -> int:
    """Task messages waiting in any queue, at any priority."""
    return sum(client.redis.llen(str(k)) for k in client.redis.scan_iter(match="[cg]pu*"))


@pytest.fixture
def busy(client: Client) -> Iterator[JobHandle]:
    """The session's single worker, busy with a job that runs until this fixture cancels it."""
    job = client.submit(**ENDLESS)
    wait_for(lambda: record(client, job.job_id).state == JobState.RUNNING, 30, "the busy job")
    yield job
    job.cancel()
    assert job.result(timeout=30).finish_reason == FinishReason.CANCELLED


def test_mixed_batch_completes_with_results_in_input_order_matching_each_jobs_stream(
    client: Client,
) -> None:
    batch = client.submit_batch(MIXED)
    assert batch.submission.created == len(MIXED)
    status = batch.wait(timeout=60)
    assert (status.total, status.succeeded, status.queued, status.running) == (4, 4, 0, 0)
    lines = list(batch.results())
    assert [line.custom_id for line in lines] == [m["custom_id"] for m in MIXED]
    for line in lines:
        with client.job(line.job_id).stream(timeout=30) as stream:
            frames = list(stream)
        streamed = "".join(f.data.text for f in frames if isinstance(f, TokenFrame))
        assert line.status == JobState.SUCCEEDED and line.error is None
        assert line.text == streamed == stream.result.text
        assert line.usage == stream.result.usage
    assert [line.usage.completion_tokens for line in lines if line.usage] == [12, 9, 7, 5]
    assert status.tokens == 12 + 9 + 7 + 5
    chat = record(client, lines[1].job_id).spec
    assert chat.messages is not None and chat.messages[0].content == "Hi"


def test_cli_submit_wait_and_results_write_one_line_per_job_in_input_order(
    client: Client, genq_env: dict[str, str], tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "batch.jsonl", MIXED)
    submitted = run_genq(genq_env, "submit", str(source), "--max-tokens", "3")
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()
    assert "submitted 4 jobs" in submitted.stderr
    waited = run_genq(genq_env, "wait", batch_id, "--timeout", "60")
    assert waited.returncode == 0, waited.stderr
    assert "4 succeeded" in waited.stderr
    out = tmp_path / "results.jsonl"
    written = run_genq(genq_env, "results", batch_id, "--out", str(out))
    assert written.returncode == 0, written.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["custom_id"] for line in lines] == ["plain", "chat", "completion", "last"]
    assert {line["status"] for line in lines} == {"succeeded"}
    assert all(line["usage"]["completion_tokens"] for line in lines)
    shown = run_genq(genq_env, "status", batch_id, "--json")
    assert json.loads(shown.stdout)["succeeded"] == 4
    job = run_genq(genq_env, "status", lines[0]["job_id"], "--json")
    assert json.loads(job.stdout)["state"] == "succeeded"
    assert json.loads(job.stdout)["custom_id"] == "plain"


BAD_LINES: list[Any] = [
    {"custom_id": "ok", "prompt": "fine", "max_tokens": 2},
    '{"custom_id": "broken", "prompt": ',
    {"custom_id": "model", "prompt": "x", "model": "no-such-model"},
    {"custom_id": "hot", "prompt": "x", "temperature": 7},
    {"custom_id": "ok", "prompt": "again"},
    {"custom_id": "also-ok", "prompt": "fine too", "max_tokens": 2},
]


def test_a_file_with_bad_lines_is_rejected_line_by_line_and_nothing_is_queued(
    client: Client, genq_env: dict[str, str], tmp_path: Path
) -> None:
    before = (job_keys(client), broker_messages(client))
    source = write_jsonl(tmp_path / "bad.jsonl", BAD_LINES)
    proc = run_genq(genq_env, "submit", str(source))
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    err = " ".join(proc.stderr.split())
    assert "4 invalid lines; nothing was submitted" in err
    assert "line 2: invalid JSON" in err
    assert "line 3:" in err and "no-such-model" in err
    assert "line 4: temperature" in err
    assert "line 5: duplicate custom_id 'ok' (first on line 1)" in err
    assert "line 1:" not in err and "line 6:" not in err
    assert (job_keys(client), broker_messages(client)) == before


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "it is empty"), (b"\n\n", "it is empty"), (b"\x7fELF\x02\x01\x00\x00" * 64, "binary")],
)
def test_an_empty_or_binary_file_is_rejected_and_nothing_is_queued(
    client: Client, genq_env: dict[str, str], tmp_path: Path, content: bytes, reason: str
) -> None:
    before = (job_keys(client), broker_messages(client))
    source = tmp_path / "input.jsonl"
    source.write_bytes(content)
    proc = run_genq(genq_env, "submit", str(source))
    assert proc.returncode == 2
    assert reason in proc.stderr
    assert (job_keys(client), broker_messages(client)) == before


def test_skip_invalid_runs_the_good_lines_and_writes_the_rejects_to_a_file(
    client: Client, genq_env: dict[str, str], tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "bad.jsonl", BAD_LINES)
    rejects = tmp_path / "rejects.jsonl"
    proc = run_genq(genq_env, "submit", str(source), "--skip-invalid", "--rejects", str(rejects))
    assert proc.returncode == 0, proc.stderr
    batch = client.batch(proc.stdout.strip())
    assert batch.wait(timeout=60).succeeded == 2
    assert [line.custom_id for line in batch.results()] == ["ok", "also-ok"]
    rejected = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [r["line"] for r in rejected] == [2, 3, 4, 5]
    assert rejected[3]["custom_id"] == "ok" and "duplicate" in rejected[3]["error"]
    assert rejected[0]["input"] == '{"custom_id": "broken", "prompt": '


def test_resubmitting_with_the_same_batch_id_queues_nothing_new(
    client: Client, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "batch.jsonl", MIXED)
    batch_id = f"resubmit-{time.monotonic_ns()}"
    first = client.submit_batch(source, batch_id=batch_id)
    first.wait(timeout=60)
    jobs_before, results_before = job_keys(client), list(first.results())
    again = client.submit_batch(source, batch_id=batch_id)
    assert (again.submission.created, again.submission.existing) == (0, len(MIXED))
    assert job_keys(client) == jobs_before
    assert broker_messages(client) == 0
    assert again.status().total == len(MIXED)
    assert list(again.results()) == results_before
    grown = client.submit_batch([*MIXED, {"custom_id": "new", "prompt": "x", "max_tokens": 2}],
                                batch_id=batch_id)  # fmt: skip
    assert (grown.submission.created, grown.submission.existing) == (1, len(MIXED))
    assert [line.custom_id for line in grown.results()][-1] == "new"


def test_cancelling_a_batch_midway_stops_running_jobs_and_starts_no_queued_one(
    client: Client, genq_env: dict[str, str]
) -> None:
    lines: list[dict[str, Any]] = [
        {"custom_id": "first", "prompt": "short", "max_tokens": 4, "ignore_eos": True}
    ]
    lines += [{"custom_id": f"long-{i}", **ENDLESS} for i in range(4)]
    batch = client.submit_batch(lines)
    ids = list(batch.job_ids())
    long_job = ids[1]
    wait_for(
        lambda: stream_length(client.redis, client.keys, long_job) >= 5,
        30,
        "the first long job's frames",
    )
    proc = run_genq(genq_env, "cancel", batch.batch_id)
    assert proc.returncode == 0, proc.stderr
    assert "3 not started, 1 running told to stop, 1 already ended" in proc.stderr
    status = batch.wait(timeout=30)
    assert (status.succeeded, status.cancelled, status.state) == (1, 4, "cancelled")
    results = list(batch.results())
    assert results[0].status == JobState.SUCCEEDED and results[0].usage is not None
    assert results[0].usage.completion_tokens == 4
    stopped = results[1]
    assert stopped.status == JobState.CANCELLED
    assert stopped.finish_reason == FinishReason.CANCELLED and stopped.text
    with client.job(ids[1]).stream(timeout=30) as stream:
        streamed = "".join(f.data.text for f in stream if isinstance(f, TokenFrame))
    assert streamed == stopped.text == stream.result.text
    for job_id, line in zip(ids[2:], results[2:], strict=True):
        assert line.status == JobState.CANCELLED and line.text == ""
        never = record(client, job_id)
        assert (never.attempts, never.started_ms) == (0, 0)
    after = client.submit(
        "still serving", max_tokens=3, ignore_eos=True
    )  # the worker skipped the cancelled
    assert after.result(timeout=30).usage.completion_tokens == 3


def test_a_running_job_stops_within_one_chunk_of_its_cancel_and_keeps_its_text(
    client: Client,
) -> None:
    job = client.submit(**ENDLESS)
    wait_for(lambda: stream_length(client.redis, client.keys, job.job_id) >= 10, 30, "frames")
    report = job.cancel()
    cancelled_ms = time.time_ns() // 1_000_000  # the cancel is in Redis by now
    assert (report.not_started, report.signalled) == (0, 1)
    with job.stream(timeout=30) as stream:
        frames = list(stream)
    after = [f for f in frames if isinstance(f, TokenFrame) and f.ts_ms > cancelled_ms]
    # at most the chunk whose round trip saw the cancel (and the text it held back)
    assert sum(len(f.data.token_ids) for f in after) <= client.settings.chunk_tokens
    result = stream.result
    assert result.finish_reason == FinishReason.CANCELLED
    assert result.text == stream.text and result.usage.completion_tokens > 0
    assert record(client, job.job_id).state == JobState.CANCELLED


def test_a_stream_callback_stops_its_job_and_the_handle_returns_the_partial_result(
    client: Client,
) -> None:
    job = client.submit(**ENDLESS)
    seen: list[TokenFrame] = []

    def enough(frame: TokenFrame) -> object:
        seen.append(frame)
        return STOP if len(seen) == 3 else None

    with job.stream(timeout=30, on_chunk=enough) as stream:
        for _ in stream:
            pass
    result = job.result()
    assert result.finish_reason == FinishReason.CANCELLED
    # The callback is not called again once it asked to stop; chunks already on their way
    # when the worker saw the cancel still belong to the result.
    assert len(seen) == 3
    assert result.text == stream.text
    assert result.text.startswith("".join(f.data.text for f in seen))
    assert 0 < result.usage.completion_tokens < ENDLESS["max_tokens"]


def test_a_queued_job_cancelled_never_starts(client: Client, busy: JobHandle) -> None:
    waiting = client.submit("never", max_tokens=5)
    assert waiting.cancel().not_started == 1
    result = waiting.result(timeout=10)
    assert (result.finish_reason, result.text) == (FinishReason.CANCELLED, "")
    assert record(client, waiting.job_id).started_ms == 0


def test_a_job_not_started_before_its_expiry_never_runs_and_is_reported_expired(
    client: Client, busy: JobHandle, genq_env: dict[str, str]
) -> None:
    late = client.submit("too late", max_tokens=5, expires_in=0.5)
    with pytest.raises(JobFailed) as failed:
        late.result(timeout=30)
    assert failed.value.error_code == "expired"
    last = list(client.job(late.job_id).stream(timeout=10))[-1]
    assert isinstance(last, ErrorFrame) and last.data.code == "expired"
    shown = run_genq(genq_env, "status", late.job_id, "--json")
    assert json.loads(shown.stdout)["state"] == "expired"
    busy.cancel()  # the worker now takes the expired job's message, and must not run it
    busy.result(timeout=30)
    after = client.submit("after", max_tokens=2)
    after.result(timeout=30)
    gone = record(client, late.job_id)
    assert (gone.state, gone.attempts, gone.started_ms) == (JobState.EXPIRED, 0, 0)


def test_a_higher_priority_job_queued_later_starts_before_lower_ones(
    make_stack: Any,
) -> None:
    stack: Stack = make_stack()
    stack.relay()
    stack.worker("solo")
    with Client(stack.settings) as client:
        blocker = client.submit(**ENDLESS)
        wait_for(lambda: record(client, blocker.job_id).state == JobState.RUNNING, 30, "blocker")
        low = [client.submit(f"low {i}", max_tokens=3, priority=1) for i in range(3)]
        high = client.submit("high", max_tokens=3, priority=9)
        blocker.cancel()
        for job in [*low, high]:
            job.result(timeout=30)
        started = {job.job_id: record(client, job.job_id).started_ms for job in [*low, high]}
    assert started[high.job_id] < min(started[job.job_id] for job in low)


def test_stream_many_merges_several_jobs_frames_tagged_by_job(client: Client) -> None:
    jobs = [client.submit(f"merge {i}", max_tokens=30, seed=i, ignore_eos=True) for i in range(3)]
    texts: dict[str, str] = {job.job_id: "" for job in jobs}
    for job, frame in client.stream_many(jobs, timeout=60):
        if isinstance(frame, TokenFrame):
            texts[job.job_id] += frame.data.text
    for job in jobs:
        assert texts[job.job_id] == job.result().text
        assert job.result().usage.completion_tokens == 30


def test_batch_handle_lists_its_jobs_and_attaches_by_id(client: Client) -> None:
    batch: BatchHandle[JobHandle] = client.submit_batch(MIXED[:2])
    again = client.batch(batch.batch_id)
    assert [job.job_id for job in again.jobs()] == list(batch.job_ids())
    assert again.wait(timeout=60).complete


def test_submitting_to_a_cancelled_batch_is_refused_and_adds_no_job(client: Client) -> None:
    batch = client.submit_batch([{"custom_id": "only", "prompt": "x", "max_tokens": 2}])
    batch.wait(timeout=30)
    batch.cancel()
    with pytest.raises(InvalidBatch, match="was cancelled: it takes no new jobs"):
        client.submit_batch(
            [{"custom_id": "late", "prompt": "x", "max_tokens": 2}], batch_id=batch.batch_id
        )
    assert len(list(batch.job_ids())) == 1
    assert batch.status().total == 1


def test_a_cancelled_batch_starts_no_job_whatever_became_of_its_jobs_cancel_keys(
    make_stack: Any,
) -> None:
    """A job of the batch queued again after its worker died is ended by the next worker
    with its committed text, from the batch's cancel alone."""
    stack: Stack = make_stack()
    stack.relay()
    first = stack.worker("first")
    with Client(stack.settings) as client:
        batch = client.submit_batch([{"custom_id": "long", **ENDLESS, "window_tokens": 50}])
        (job_id,) = batch.job_ids()
        ckpt = streams.checkpointed(client.keys, job_id)
        wait_for(lambda: run(client.redis, ckpt) >= 2, 30, "two committed windows")
        first.signal(signal.SIGKILL)
        wait_for(lambda: record(client, job_id).epoch == 1, 30, "the reaper's requeue")
        batch.cancel()
        # A raw DEL on purpose: the job's own cancel key lost, so that the batch's flag must do.
        client.redis.delete(jobs.cancel_key(client.keys, job_id))
        stack.worker("second")
        result = client.job(job_id).result(timeout=30)
        committed = "".join(w.text for w in run(client.redis, streams.entries(client.keys, job_id)))
        ended = record(client, job_id)
    assert result.finish_reason == FinishReason.CANCELLED
    assert result.text == committed and committed
    assert (ended.state, ended.attempts) == (JobState.CANCELLED, 1)
