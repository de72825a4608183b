"""A worker with slots runs many jobs of one model at once (continuous batching, concurrent
remote streams), and hands its running jobs off when it is told to shut down."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from genq import Client, InvalidJob, JobHandle
from genq.common.frames import DoneFrame, TokenFrame
from genq.common.registry import ModelRegistry
from genq.common.routing import queue_name
from genq.common.schemas import JobState
from genq.common.store import leases, queues, run, streams
from genq.common.tinymodel import TINY_N_CTX, ensure_tiny_model
from ops.localstack import genq_executable, wait_for

from .conftest import Stack
from .test_failover import WINDOW, assert_resumed_cleanly, entries, record
from .test_remote import NO_EOS, REMOTE, remote_entry, remote_stack, start_server

TIMEOUT_S = 120
LONG: dict[str, Any] = {  # runs until cancelled: holds a slot
    "max_tokens": 1_000_000,
    "window_tokens": WINDOW,
    "ignore_eos": True,
}


def job(seed: int, tokens: int = 3000, **more: Any) -> dict[str, Any]:
    return {
        "prompt": f"slots {seed}",
        "max_tokens": tokens,
        "window_tokens": WINDOW,
        "seed": seed,
        "ignore_eos": True,
        **more,
    }


def streamed_text(client: Client, job_id: str) -> str:
    """The job's text as its token chunks, each attempt cut back at its resume, give it."""
    with client.job(job_id).stream(timeout=TIMEOUT_S) as stream:
        for _frame in stream:
            pass
        return stream.text


def state(client: Client, job_id: str) -> JobState:
    return record(client, job_id).state


def wait_running(client: Client, handles: list[JobHandle], windows: int = 1) -> None:
    """Until every job runs and has checkpointed `windows` windows."""

    def going() -> bool:
        for handle in handles:
            if state(client, handle.job_id) is not JobState.RUNNING:
                return False
            if run(client.redis, streams.checkpointed(client.keys, handle.job_id)) < windows:
                return False
        return True

    wait_for(going, TIMEOUT_S, f"{len(handles)} jobs running")


def first_token_and_done_ms(client: Client, job_id: str) -> tuple[int, int]:
    frames = entries(client, job_id)
    first = next(f.ts_ms for f in frames if isinstance(f, TokenFrame))
    done = next(f.ts_ms for f in frames if isinstance(f, DoneFrame))
    return first, done


@pytest.fixture
def slots_stack(make_stack: Callable[[], Stack]) -> Stack:
    stack = make_stack()
    stack.relay()
    return stack


def test_eight_jobs_on_eight_slots_stream_at_once_and_each_streams_its_result(
    slots_stack: Stack,
) -> None:
    slots_stack.worker("a", "--slots", "8")
    with Client(slots_stack.settings) as client:
        handles = [client.submit(**job(seed)) for seed in range(8)]
        results = [h.result(timeout=TIMEOUT_S) for h in handles]
        for handle, result in zip(handles, results, strict=True):
            assert result.usage.completion_tokens == 3000
            assert streamed_text(client, handle.job_id) == result.text
        times = [first_token_and_done_ms(client, h.job_id) for h in handles]
        # One at a time, a job's first token would come after the one before it ended.
        assert max(first for first, _ in times) < min(done for _, done in times)
        assert len({r.text for r in results}) == 8


def test_a_job_waiting_for_a_full_engine_takes_the_next_free_slot_by_priority(
    slots_stack: Stack,
) -> None:
    slots_stack.worker("a", "--slots", "2")
    with Client(slots_stack.settings) as client:
        holders = [client.submit(prompt=f"holder {i}", seed=i, **LONG) for i in range(2)]
        wait_running(client, holders)
        # Both wait in the broker queue, which the worker does not consume while its two
        # slots are held (workers.celery.admission): the broker hands out the more urgent first.
        low = client.submit(**job(1, tokens=200), priority=1)
        high = client.submit(**job(2, tokens=200), priority=9)
        holders[0].cancel()  # one slot frees: the later, more urgent job takes it
        high.result(timeout=TIMEOUT_S)
        holders[1].cancel()
        low.result(timeout=TIMEOUT_S)
        first, second = record(client, high.job_id), record(client, low.job_id)
        # The other slot stayed held, so the low job waited for the high one to end.
        assert first.finished_ms > 0 and second.started_ms > 0
        assert second.started_ms >= first.finished_ms


ONE_SLOT = "tiny-one-slot"


def one_slot_model(stack: Stack) -> None:
    """A registry entry `ONE_SLOT`: the tiny model's file, one slot."""
    tiny = ModelRegistry.from_settings(stack.settings).local_path("tiny")
    registry = stack.logs / "one-slot-models.toml"
    registry.write_text(
        f'[models.{ONE_SLOT}]\nbackend = "llama"\npath = "{tiny}"\n'
        f"n_ctx = {TINY_N_CTX}\nn_threads = 1\nslots = 1\n"
    )
    stack.env["GENQ_MODELS_FILE"] = str(registry)


def test_jobs_of_a_one_slot_model_wait_in_its_queue_without_a_lease_beside_a_four_slot_one(
    make_stack: Callable[[], Stack],
) -> None:
    """The worker runs 4 jobs at once (tiny's slots), but one of its one-slot model's: the
    others wait in the model's queue, not claimed, for any worker, while tiny's run."""
    stack = make_stack()
    one_slot_model(stack)
    stack.relay()
    stack.worker("a", "--slots", "4", "--models", f"tiny,{ONE_SLOT}")
    with Client(stack.settings) as client:
        holder = client.submit(model=ONE_SLOT, prompt="one slot holder", seed=1, **LONG)
        wait_running(client, [holder])
        waiting = [client.submit(**job(seed, tokens=200), model=ONE_SLOT) for seed in range(3)]
        beside = [client.submit(**job(seed, tokens=200)) for seed in range(3)]
        for handle in beside:  # sent after them, run by the worker's free threads
            assert handle.result(timeout=TIMEOUT_S).usage.completion_tokens == 200
        for handle in waiting:
            waited = record(client, handle.job_id)
            assert (waited.state, waited.epoch, waited.worker) == (JobState.QUEUED, 0, "")
            assert run(client.redis, leases.deadline(client.keys, handle.job_id)) is None
        assert run(client.redis, queues.depth(queue_name("cpu", ONE_SLOT))) == 3
        holder.cancel()
        for handle in waiting:
            assert handle.result(timeout=TIMEOUT_S).usage.completion_tokens == 200
        runs = sorted(
            (record(client, h.job_id) for h in [holder, *waiting]), key=lambda r: r.started_ms
        )
        for before, after in itertools.pairwise(runs):  # one at a time
            assert after.started_ms >= before.finished_ms
        assert all(r.attempts == 1 for r in runs)


def test_cancelling_one_job_of_eight_leaves_the_others_intact(slots_stack: Stack) -> None:
    slots_stack.worker("a", "--slots", "8")
    with Client(slots_stack.settings) as client:
        handles = [client.submit(**job(seed, tokens=4000)) for seed in range(8)]
        wait_running(client, handles)
        handles[3].cancel()
        for i, handle in enumerate(handles):
            result = handle.result(timeout=TIMEOUT_S)
            assert streamed_text(client, handle.job_id) == result.text
            if i == 3:
                assert state(client, handle.job_id) is JobState.CANCELLED
                assert result.usage.completion_tokens < 4000
            else:
                assert state(client, handle.job_id) is JobState.SUCCEEDED
                assert result.usage.completion_tokens == 4000


def test_eight_jobs_of_a_killed_worker_resume_elsewhere_with_no_text_lost_or_repeated(
    slots_stack: Stack,
) -> None:
    a = slots_stack.worker("a", "--slots", "8")
    with Client(slots_stack.settings) as client:
        handles = [client.submit(**job(seed, tokens=8000)) for seed in range(8)]
        wait_running(client, handles, windows=2)
        a.signal(signal.SIGKILL)
        slots_stack.worker("b", "--slots", "8")
        for handle in handles:
            result = handle.result(timeout=TIMEOUT_S)
            assert result.usage.completion_tokens == 8000
            assert streamed_text(client, handle.job_id) == result.text
            assert_resumed_cleanly(client, handle.job_id, epochs=2)
            assert record(client, handle.job_id).worker.startswith("b@")


def test_a_sampled_batched_job_resumes_bit_for_bit_beside_other_neighbours(
    slots_stack: Stack,
) -> None:
    """No job is set apart to be exact: a job sampled at temperature 1, resumed after
    SIGKILL beside batched jobs, ends with the text of an uninterrupted run that had other
    neighbours (and no flag asked for it)."""
    a = slots_stack.worker("a", "--slots", "4")
    sampled = job(7, tokens=20_000, temperature=1.0)
    with Client(slots_stack.settings) as client:
        others = [client.submit(**job(seed, tokens=20_000)) for seed in range(3)]
        handle = client.submit(**sampled)
        wait_running(client, [*others, handle], windows=3)
        a.signal(signal.SIGKILL)
        slots_stack.worker("b", "--slots", "4")
        resumed = handle.result(timeout=TIMEOUT_S).text
        assert_resumed_cleanly(client, handle.job_id, epochs=2)
        for other in others:
            other.result(timeout=TIMEOUT_S)
        # Uninterrupted, on b, beside two other jobs than before.
        beside = [client.submit(**job(seed + 10, tokens=5000)) for seed in range(2)]
        again = client.submit(**sampled)
        assert again.result(timeout=TIMEOUT_S).text == resumed
        for other in beside:
            other.result(timeout=TIMEOUT_S)


@pytest.mark.parametrize("slots", ["2", "1"], ids=["threads-pool", "prefork-pool"])
def test_sigterm_hands_running_jobs_off_and_they_finish_elsewhere(
    make_stack: Callable[[], Stack], slots: str
) -> None:
    stack = make_stack()
    stack.relay()
    # Leases far longer than the test: only a hand-off can move the jobs in time.
    a = stack.worker("a", "--slots", slots, GENQ_LEASE_TTL_S="600")
    with Client(stack.settings) as client:
        handles = [client.submit(**job(seed, tokens=20_000)) for seed in range(int(slots))]
        wait_running(client, handles, windows=2)
        assert a.proc is not None
        a.proc.send_signal(signal.SIGTERM)  # the main process only, as a deploy does
        # Started after the signal, so that no job can end on `a` while `b` starts: a
        # handed-off job waits, queued, for `b`.
        stack.worker("b", "--slots", slots, GENQ_LEASE_TTL_S="600")
        for handle in handles:
            result = handle.result(timeout=TIMEOUT_S)
            assert streamed_text(client, handle.job_id) == result.text
            assert_resumed_cleanly(client, handle.job_id, epochs=2)
            done = record(client, handle.job_id)
            assert done.worker.startswith("b@")
            assert done.attempts == 1  # a hand-off is not a failed attempt
        assert a.proc.wait(timeout=TIMEOUT_S) == 0


def test_remote_jobs_stream_concurrently_through_one_worker_process(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()
    server = start_server(stack.settings, stack.logs / "server.log")
    try:
        remote_stack(stack, remote_entry(REMOTE, f"http://127.0.0.1:{server.port}/v1"))
        stack.relay()
        stack.worker("w", "--slots", "4", "--models", REMOTE)
        with Client(stack.settings) as client:
            spec: dict[str, Any] = {"model": REMOTE, "max_tokens": 160, "logit_bias": NO_EOS}
            handles = [client.submit(prompt=f"remote {i}", seed=i, **spec) for i in range(4)]
            for handle in handles:
                result = handle.result(timeout=TIMEOUT_S)
                assert result.usage.completion_tokens == 160
                assert streamed_text(client, handle.job_id) == result.text
            times = [first_token_and_done_ms(client, h.job_id) for h in handles]
            assert max(first for first, _ in times) < min(done for _, done in times)
    finally:
        server.stop()


def genq_worker(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [str(genq_executable()), "worker", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def worker_env(genq_env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **genq_env}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--slots", "0"], "0 is not in the range 1<=x<=256"),
        (["--slots", "abc"], "'abc' is not a valid integer"),
        (["--slots", "4", "-c", "2"], "-c 2 starts processes of one slot each"),
    ],
)
def test_bad_slots_are_refused_with_a_clear_message(
    worker_env: dict[str, str], args: list[str], message: str
) -> None:
    done = genq_worker(*args, env=worker_env)
    assert done.returncode == 2
    assert message in done.stderr


SMALL = "tiny32"  # the tiny model with a context of 32 tokens: a decode step holds 32


def small_context_registry(root: Path) -> Path:
    registry = root / "small-models.toml"
    gguf = ensure_tiny_model(root)
    registry.write_text(f'[models.{SMALL}]\nbackend = "llama"\npath = "{gguf}"\nn_ctx = 32\n')
    return registry


def test_more_slots_than_a_decode_step_holds_are_refused_before_celery_starts(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    """llama.cpp would abort the worker at its first job (an output per sequence, in a
    buffer of n_batch outputs), and the requeued jobs the next one."""
    registry = small_context_registry(tmp_path)
    env = {**worker_env, "GENQ_MODELS_FILE": str(registry)}
    refused = (
        f"model registry {registry}: [models.{SMALL}]: 64 slots do not fit a decode step of "
        "32 tokens (its n_batch, at most its n_ctx of 32)"
    )
    done = genq_worker("--models", SMALL, "--slots", "64", env=env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and refused in done.stderr  # one line, no banner
    plain = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "genq.workers.app", "worker"],
        env={**env, "GENQ_WORKER_MODELS": SMALL, "GENQ_SLOTS": "64"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert plain.returncode == 2
    assert f"genq worker: error: {refused}" in plain.stderr


def test_as_many_slots_as_a_decode_step_holds_run_every_job(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()
    stack.env["GENQ_MODELS_FILE"] = str(small_context_registry(stack.logs))
    stack.relay()
    stack.worker("a", "--models", SMALL, "--slots", "32")
    with Client(stack.settings) as client:
        spec: dict[str, Any] = {"model": SMALL, "max_tokens": 16, "ignore_eos": True}
        handles = [client.submit(prompt=f"small {i}", seed=i, **spec) for i in range(48)]
        for handle in handles:
            assert handle.result(timeout=TIMEOUT_S).usage.completion_tokens == 16


def test_a_job_that_cannot_fit_a_slot_is_refused_with_the_numbers(slots_stack: Stack) -> None:
    slots_stack.worker("a", "--slots", "4")
    refused = r"prompt is \d+ tokens; model 'tiny' has a context of 256"
    with Client(slots_stack.settings) as client, pytest.raises(InvalidJob, match=refused):
        client.submit(prompt="word " * 400, max_tokens=8)
