"""Workers and relays log one structured line per event: job id, epoch, worker and model on a
job's lines, never its prompt at info level, never a password."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from genq import Client
from ops.localstack import wait_for

from .conftest import Stack

CANARY = "PROMPT-CANARY-7f3a"


@pytest.fixture
def password_stack(make_stack: Callable[[], Stack]) -> Iterator[tuple[Stack, str]]:
    """A stack whose Redis URL carries a password: an ACL user of the session's Redis."""
    stack = make_stack()
    password = f"pw-{secrets.token_hex(8)}"
    user = f"genq-{secrets.token_hex(4)}"
    url = stack.env["GENQ_REDIS_URL"]
    admin = redis.Redis.from_url(url)
    admin.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{password}"],
        keys=["*"],
        channels=["*"],
        commands=["+@all"],
    )
    stack.env["GENQ_REDIS_URL"] = url.replace("redis://", f"redis://{user}:{password}@")
    stack.env["GENQ_LOG_FORMAT"] = "json"
    yield stack, password
    stack.stop()
    admin.acl_deluser(user)
    admin.close()


def logged(log: Path, *needles: str) -> str:
    """The log once a line with every needle is in it: a job's result is readable as soon as
    its final record is written, a moment before its worker logs that it ended. Only whole
    lines: one being written as the log is read is left out."""
    text = ""

    def found() -> bool:
        nonlocal text
        text = log.read_text().rpartition("\n")[0]
        return any(all(n in line for n in needles) for line in text.splitlines())

    wait_for(found, 30, f"a line with {needles} in {log}")
    return text


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of the log, each of which must be one JSON object."""
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON log line: {line!r}")
    return events


def test_json_logs_name_the_job_epoch_worker_and_model_and_never_the_prompt_or_password(
    password_stack: tuple[Stack, str],
) -> None:
    stack, password = password_stack
    stack.relay()
    stack.worker("logs")
    with Client(stack.settings) as client:
        job = client.submit(f"{CANARY} once upon", max_tokens=21, seed=3, ignore_eos=True)
        result = job.result(timeout=60)
    worker_log = logged(stack.logs / "logs.log", '"job ended"', job.job_id)
    relay_log = logged(stack.logs / "relay.log", "relay: moving frames")
    for text in (worker_log, relay_log):
        assert CANARY not in text
        assert password not in text
    events = json_lines(worker_log)
    mine = [e for e in events if e.get("job") == job.job_id]
    started = next(e for e in mine if e["event"] == "job started")
    ended = next(e for e in mine if e["event"] == "job ended")
    for event in (started, ended):
        assert (event["epoch"], event["model"], event["level"]) == (0, "tiny", "info")
        assert event["worker"].startswith("logs@")
    assert (ended["tokens"], ended["finish"], ended["state"]) == (21, "length", "succeeded")
    assert ended["tokens"] == result.usage.completion_tokens
    assert any(e["event"].endswith("ready.") for e in events)  # Celery's own lines too
    relay_events = json_lines(relay_log)
    assert relay_events and all(e["relay"].startswith("relay@") for e in relay_events)


def test_text_logs_put_the_jobs_fields_after_the_event_on_one_line(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()
    stack.relay()
    stack.worker("text")
    with Client(stack.settings) as client:
        job = client.submit(f"{CANARY} hi", max_tokens=5, ignore_eos=True)
        job.result(timeout=60)
    lines = logged(stack.logs / "text.log", "job ended", job.job_id).splitlines()
    ended = [line for line in lines if "job ended" in line and f"job={job.job_id}" in line]
    assert len(ended) == 1
    assert " epoch=0 model=tiny " in ended[0] and " tokens=5 " in ended[0]
    assert " worker=text@" in ended[0]
    assert not any(CANARY in line for line in lines)
