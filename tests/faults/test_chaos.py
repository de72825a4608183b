"""Chaos: sampled jobs batched on `--slots 8` workers that are killed (SIGKILL) or told to
shut down (SIGTERM) again and again, at random token counts. Every job must end with exactly
the text of an uninterrupted run whose batch neighbours were different: the engine's logits
do not depend on the batch, a token's draw depends only on the seed and its position, and a
resume continues from every token the stream holds."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from genq import Client, JobHandle
from genq.common.frames import ResumeFrame
from genq.common.schemas import JobState
from ops.localstack import Worker, wait_for
from tests import state
from tests.integration.conftest import Stack
from tests.integration.test_failover import entries, record

KILLS = 20
SLOTS = "8"
TIMEOUT_S = 240


def sampled(seed: int, **more: Any) -> dict[str, Any]:
    """A long job sampled at temperature 0.9, with a repeat penalty (whose history must
    reproduce too) and windows smaller than a run between kills."""
    return {
        "prompt": f"chaos {seed}",
        "max_tokens": 12_000,
        "window_tokens": 150,
        "temperature": 0.9,
        "repeat_penalty": 1.1,
        "seed": seed,
        "ignore_eos": True,
        **more,
    }


def neighbours(seed: int) -> list[dict[str, Any]]:
    """Other jobs decoding beside them: different prompts, seeds and lengths each run."""
    return [
        sampled(seed + i, prompt=f"neighbour {seed} {i}" * (i + 1), max_tokens=10_000)
        for i in range(4)
    ]


def stream_length(client: Client, job_id: str) -> int:
    """Entries of the job's stream (a chunk of up to 16 tokens each, mostly): cheap to poll."""
    return state.stream_length(client.redis, client.keys, job_id)


def where_it_differs(client: Client, job_id: str, text: str, expected: str) -> str:
    """The first character that differs, beside the job's resume points (its frames'
    committed characters): what a failure needs to say."""
    at = next((i for i, (a, b) in enumerate(zip(text, expected, strict=False)) if a != b), None)
    # (epoch, window, chars) of each resume
    resumes = [
        (f.epoch, f.data.from_window, f.data.committed_chars)
        for f in entries(client, job_id)
        if isinstance(f, ResumeFrame)
    ]
    return f"job {job_id}: differs at {at} of {len(expected)}; resumes: {resumes}"


def references(stack: Stack, jobs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Each job's text, uninterrupted, beside other neighbours than in the chaos run, and its
    job id."""
    worker = stack.worker("reference", "--slots", SLOTS)
    with Client(stack.settings) as client:
        handles = [client.submit(**spec) for spec in [*jobs, *neighbours(500)]]
        texts = [(handle.result(timeout=TIMEOUT_S).text, handle.job_id) for handle in handles]
    worker.stop()
    return texts[: len(jobs)]


def dump(stack: Stack, client: Client, job_id: str) -> None:
    """The job's frames, for the post-mortem of a failure."""
    lines = [frame.model_dump_json() for frame in entries(client, job_id)]
    (stack.logs / f"{job_id}.frames").write_text("\n".join(lines))


def live(client: Client, handles: list[JobHandle]) -> list[JobHandle]:
    ended = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    records = [record(client, h.job_id) for h in handles]
    assert JobState.FAILED not in {r.state for r in records}, [r.error for r in records]
    return [h for h, r in zip(handles, records, strict=True) if r.state not in ended]


def kill_once(
    stack: Stack, client: Client, rng: random.Random, handles: list[JobHandle], n: int
) -> str | None:
    """Wait for a running job to stream a random number more chunks (of up to 16 tokens),
    then SIGKILL or SIGTERM its worker and start another; the signal sent ("none" when the
    job ended first), None when every job ended."""
    running = live(client, handles)
    if not running:
        return None
    target = rng.choice(running)
    goal = stream_length(client, target.job_id) + rng.randint(1, 20)

    def reached() -> bool:
        return stream_length(client, target.job_id) >= goal or target not in live(client, [target])

    wait_for(reached, TIMEOUT_S, f"job {target.job_id} to stream {goal} entries")
    job = record(client, target.job_id)
    if job.state is not JobState.RUNNING:
        return "none"
    sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
    holder = stack.holder(client, target.job_id)
    assert holder.proc is not None
    if sig is signal.SIGKILL:
        holder.signal(sig)  # the whole process group, as the OOM killer or a crash would
    else:
        holder.proc.send_signal(sig)  # the main process, as a deploy does
    # Not waited for: the jobs resume on the other worker, or on this one once it is up.
    name = f"w{n + 3}"
    log = stack.logs / f"{name}.log"
    replacement = Worker(env=stack.env, log=log, args=("--slots", SLOTS), name=name)
    stack.procs.append(replacement.spawn())
    return sig.name


@pytest.mark.timeout(900)
def test_sampled_batched_jobs_survive_twenty_kills_with_the_uninterrupted_text(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()
    stack.relay(GENQ_MAX_ATTEMPTS="100")  # every SIGKILL costs its jobs an attempt
    jobs = [sampled(seed) for seed in range(8)]
    expected = references(stack, jobs)
    rng = random.Random(2026)
    for name in ("w0", "w1", "w2"):  # a killed worker's jobs always find one up
        stack.worker(name, "--slots", SLOTS)
    with Client(stack.settings) as client:
        handles = [client.submit(**spec) for spec in [*jobs, *neighbours(900)]]
        signals: list[str] = []
        started = time.monotonic()
        while len(signals) < KILLS:
            sent = kill_once(stack, client, rng, handles, len(signals))
            assert sent is not None, f"every job ended after {signals}: make them longer"
            if sent != "none":
                signals.append(sent)
            print(f"{time.monotonic() - started:6.1f}s: {sent}")  # shown when the test fails
        assert {"SIGKILL", "SIGTERM"} <= set(signals)
        for handle, (text, reference) in zip(handles, expected, strict=False):
            result = handle.result(timeout=TIMEOUT_S)
            if result.text != text:
                dump(stack, client, handle.job_id)
                dump(stack, client, reference)
            assert result.text == text, where_it_differs(client, handle.job_id, result.text, text)
        assert sum(record(client, h.job_id).epoch for h in handles) >= KILLS
