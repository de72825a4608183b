"""Bad input gets a clear error and queues nothing; failures end jobs cleanly."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from genq import (
    Client,
    InvalidJob,
    JobFailed,
    PromptTooLong,
    RedisUnavailable,
    Settings,
    UnknownModel,
)
from genq.common.frames import ErrorFrame
from genq.common.schemas import JobState
from genq.common.store import jobs
from genq.common.store.keys import Keys
from ops.localstack import Worker, free_port
from tests.state import job_record

from .support import BROKEN_MODEL, run_genq


def queued_state(r: redis.Redis) -> tuple[int, int]:
    """(job records, messages waiting in the broker's queues, at any priority)."""
    jobs = sum(1 for _ in r.scan_iter(match="genq:{*}:job", count=1000))
    return jobs, sum(int(r.llen(str(key))) for key in r.scan_iter(match="[cg]pu.*"))


INVALID: list[tuple[dict[str, Any], type[InvalidJob], str]] = [
    ({"prompt": "hi", "model": "no-such-model"}, UnknownModel, "known models: broken, "),
    ({"prompt": "hi", "temperature": 5.0}, InvalidJob, "temperature"),
    ({"prompt": "hi", "max_tokens": 0}, InvalidJob, "max_tokens"),
    ({"prompt": "hi", "top_p": 0.0}, InvalidJob, "top_p"),
    ({"prompt": "hi", "seed": -1}, InvalidJob, "seed"),
    ({"prompt": "hi", "stop": ["x"] * 17}, InvalidJob, "stop"),
    ({"prompt": "hi", "colour": "red"}, InvalidJob, "colour"),
    ({"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}, InvalidJob, "exactly one"),
    ({"max_tokens": 5}, InvalidJob, "exactly one"),
    ({"prompt": "x" * 300}, PromptTooLong, "context of 256 tokens"),
    ({"messages": [{"role": "user", "content": "y" * 300}]}, PromptTooLong, "256"),
]


@pytest.mark.parametrize(("fields", "error", "says"), INVALID)
def test_invalid_job_is_rejected_with_a_clear_error_and_nothing_is_queued(
    client: Client,
    redis_client: redis.Redis,
    fields: dict[str, Any],
    error: type[InvalidJob],
    says: str,
) -> None:
    before = queued_state(redis_client)
    with pytest.raises(error) as caught:
        client.submit(**fields)
    assert says in str(caught.value)
    assert queued_state(redis_client) == before


def test_prompt_over_the_character_limit_is_rejected(settings: Settings, worker: Worker) -> None:
    small = settings.model_copy(update={"max_prompt_chars": 10})
    with Client(small) as client, pytest.raises(PromptTooLong, match="limit is 10"):
        client.submit("eleven char")


def test_unloadable_model_fails_the_job_and_the_worker_serves_the_next(
    client: Client, redis_client: redis.Redis, worker: Worker
) -> None:
    job = client.submit("hi", model=BROKEN_MODEL, max_tokens=5)
    frames = list(job.stream(timeout=60))
    assert isinstance(frames[-1], ErrorFrame)
    assert frames[-1].data.code == "model_load_failed"
    assert "broken.gguf" in frames[-1].data.message
    with pytest.raises(JobFailed, match="model_load_failed"):
        job.result()
    record = job_record(redis_client, Keys(), job.job_id)
    assert record.state == JobState.FAILED and record.attempts == 1
    assert worker.proc is not None and worker.proc.poll() is None
    assert (
        client.submit("hi", max_tokens=5, ignore_eos=True).result(60).usage.completion_tokens == 5
    )


def test_successful_job_record_holds_the_result(client: Client, redis_client: redis.Redis) -> None:
    job = client.submit("record", max_tokens=6, seed=1, ignore_eos=True)
    result = job.result(60)
    record = job_record(redis_client, Keys(), job.job_id)
    assert record.state == JobState.SUCCEEDED
    assert record.result == result
    assert record.spec.seed == 1 and record.worker.startswith("genq@")
    assert 0 < redis_client.ttl(jobs.record_key(Keys(), job.job_id)) <= 86_400  # no store TTL read


def test_redis_unreachable_at_submit_is_a_clear_error_without_the_password(
    settings: Settings,
) -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    unreachable = settings.model_copy(update={"redis_url": url})
    with Client(unreachable) as client, pytest.raises(RedisUnavailable) as caught:
        client.submit("hi")
    message = str(caught.value)
    assert "cannot reach Redis at redis://:***@127.0.0.1" in message
    assert "s3cret" not in message


def test_cli_reports_redis_unreachable_in_one_line(genq_env: dict[str, str]) -> None:
    env = {**genq_env, "GENQ_REDIS_URL": f"redis://:s3cret@127.0.0.1:{free_port()}/0"}
    proc = run_genq(env, "run", "hello")
    assert proc.returncode == 1
    assert "cannot reach Redis" in proc.stderr
    assert "Traceback" not in proc.stderr and "s3cret" not in proc.stderr + proc.stdout


def test_cli_rejects_invalid_parameters_with_exit_code_2(genq_env: dict[str, str]) -> None:
    proc = run_genq(genq_env, "run", "hello", "--temperature", "9")
    assert proc.returncode == 2
    assert "temperature" in proc.stderr and "Traceback" not in proc.stderr
