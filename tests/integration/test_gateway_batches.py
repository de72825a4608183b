"""The gateway's /v1/files and /v1/batches, driven by the official `openai` client against a
real `genq serve`, relay and worker: uploads, a batch run to its end, cancel, expiry, invalid
lines, unknown ids, and keys."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import openai
import pytest
from openai import OpenAI
from openai.types import Batch

from genq import Client
from ops.localstack import GenqProcess, Relay, Worker, free_port, wait_for

KEY = "test-key-batches"
FILE_BYTES_MAX = 64 * 1024  # the test gateway's upload limit
DONE = {"completed", "failed", "expired", "cancelled"}
LONG_TOKENS = 1_000_000  # runs until cancelled


@dataclass
class Gateway(GenqProcess):
    """`genq serve` on a free loopback port; ready when /v1/models answers."""

    port: int = field(default_factory=free_port)
    ready_marker: ClassVar[str] = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        return ["serve", "--host", "127.0.0.1", "--port", str(self.port)]

    def _ready(self) -> bool:
        self._check_running()
        request = urllib.request.Request(
            self.url + "/models", headers={"Authorization": f"Bearer {KEY}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=1.0) as reply:
                return int(reply.status) == 200
        except OSError:  # not listening yet
            return False


@pytest.fixture(scope="module")
def gateway(
    genq_env: dict[str, str],
    worker: Worker,
    relay: Relay,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    env = {**genq_env, "GENQ_API_KEYS": KEY, "GENQ_FILE_BYTES_MAX": str(FILE_BYTES_MAX)}
    log = tmp_path_factory.mktemp("logs") / "gateway.log"
    proc = Gateway(env=env, log=log).start()
    yield proc
    proc.stop()


@pytest.fixture
def api(gateway: Gateway) -> Iterator[OpenAI]:
    with OpenAI(base_url=gateway.url, api_key=KEY, max_retries=0, timeout=60.0) as client:
        yield client


def chat_line(custom_id: str, content: str, max_tokens: int, **body: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": content}]
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "tiny", "messages": messages, "max_tokens": max_tokens, **body},
    }


def completion_line(custom_id: str, max_tokens: int, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/completions",
        "body": {"model": "tiny", "prompt": "Once", "max_tokens": max_tokens, **body},
    }


def long_line(custom_id: str) -> dict[str, Any]:
    return completion_line(custom_id, LONG_TOKENS, ignore_eos=True, seed=1)


def jsonl(lines: list[Any]) -> bytes:
    text = "".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines)
    return text.encode()


def create(
    api: OpenAI, lines: list[Any], endpoint: Any, window: Any = "24h", **options: Any
) -> Batch:
    upload = api.files.create(file=("batch.jsonl", jsonl(lines)), purpose="batch")
    return api.batches.create(
        input_file_id=upload.id, endpoint=endpoint, completion_window=window, **options
    )


def wait_status(api: OpenAI, batch_id: str, wanted: set[str], timeout_s: float = 60.0) -> Batch:
    seen: list[Batch] = []

    def reached() -> bool:
        seen.append(api.batches.retrieve(batch_id))
        return seen[-1].status in wanted

    wait_for(reached, timeout_s, f"batch {batch_id} {sorted(wanted)}")
    return seen[-1]


def file_lines(api: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(line) for line in api.files.content(file_id).text.splitlines()]


def test_a_batch_of_chat_requests_completes_with_an_output_line_per_request(
    api: OpenAI, settings: Any
) -> None:
    lines = [chat_line(f"q{i}", "Hi", 4 + i, seed=i) for i in range(4)]
    batch = create(api, lines, "/v1/chat/completions", metadata={"run": "nightly"})
    assert batch.id.startswith("batch_") and batch.metadata == {"run": "nightly"}
    assert batch.status in {"in_progress", "completed"}
    done = wait_status(api, batch.id, DONE)

    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (4, 4)
    assert done.request_counts.failed == 0
    assert done.error_file_id is None and done.completed_at is not None
    out = file_lines(api, done.output_file_id)
    assert [line["custom_id"] for line in out] == ["q0", "q1", "q2", "q3"]
    with Client(settings) as client:  # the same batch, read through genq's own API
        results = {r.custom_id: r for r in client.batch(batch.id).results()}
    for line in out:
        body = line["response"]["body"]
        assert line["error"] is None and line["response"]["status_code"] == 200
        assert body["object"] == "chat.completion" and body["model"] == "tiny"
        result = results[line["custom_id"]]
        assert body["id"] == f"chatcmpl-{result.job_id}"
        assert body["choices"][0]["message"] == {
            "role": "assistant",
            "content": result.text,
            "refusal": None,
        }
        assert result.usage is not None
        assert body["usage"]["completion_tokens"] == result.usage.completion_tokens
    assert api.batches.retrieve(batch.id).output_file_id == done.output_file_id


def test_files_are_uploaded_listed_read_and_deleted(api: OpenAI) -> None:
    content = jsonl([completion_line("a", 3)])
    upload = api.files.create(file=("mine.jsonl", content), purpose="batch")

    assert upload.id.startswith("file-") and len(upload.id) > 30
    assert (upload.bytes, upload.filename, upload.purpose) == (len(content), "mine.jsonl", "batch")
    assert api.files.retrieve(upload.id).model_dump() == upload.model_dump()
    assert upload.id in [f.id for f in api.files.list()]
    assert api.files.content(upload.id).content == content
    assert api.files.delete(upload.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        api.files.retrieve(upload.id)


def test_an_upload_over_the_limit_is_refused_with_413(api: OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        api.files.create(file=("big.jsonl", b"x" * (FILE_BYTES_MAX + 1)), purpose="batch")
    assert caught.value.status_code == 413
    assert "GENQ_FILE_BYTES_MAX" in caught.value.message


def test_cancel_mid_way_keeps_the_finished_requests_and_cancels_the_rest(api: OpenAI) -> None:
    lines = [completion_line("short1", 3), completion_line("short2", 3)]
    lines += [long_line(f"long{i}") for i in range(3)]
    batch = create(api, lines, "/v1/completions")

    def short_ones_done() -> bool:
        counts = api.batches.retrieve(batch.id).request_counts
        return counts is not None and counts.completed == 2

    wait_for(short_ones_done, 60.0, "the two short requests")
    cancelling = api.batches.cancel(batch.id)
    assert cancelling.status in {"cancelling", "cancelled"}
    assert cancelling.cancelling_at is not None
    done = wait_status(api, batch.id, DONE)

    assert done.status == "cancelled" and done.cancelled_at is not None
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 3)
    out = file_lines(api, done.output_file_id)
    assert [line["custom_id"] for line in out] == ["short1", "short2"]
    assert {line["response"]["body"]["object"] for line in out} == {"text_completion"}
    errors = file_lines(api, done.error_file_id)
    assert [line["custom_id"] for line in errors] == ["long0", "long1", "long2"]
    assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}
    assert all(line["response"] is None for line in errors)


def test_requests_not_started_within_the_completion_window_expire(
    api: OpenAI, settings: Any
) -> None:
    lines = [long_line("busy"), completion_line("late1", 3), completion_line("late2", 3)]
    batch = create(api, lines, "/v1/completions", window="2s")
    assert batch.expires_at == batch.created_at + 2

    def late_ones_expired() -> bool:
        counts = api.batches.retrieve(batch.id).request_counts
        return counts is not None and counts.failed >= 2

    wait_for(late_ones_expired, 30.0, "the queued requests to expire")
    with Client(settings) as client:  # the one that started never expires: stop it
        busy = next(client.batch(batch.id).job_ids())
        client.cancel(busy)
    done = wait_status(api, batch.id, DONE)

    assert done.status == "expired" and done.expired_at is not None
    errors = file_lines(api, done.error_file_id)
    codes = {line["custom_id"]: line["error"]["code"] for line in errors}
    assert codes == {"busy": "batch_cancelled", "late1": "batch_expired", "late2": "batch_expired"}


def test_a_file_with_invalid_lines_fails_the_batch_naming_each_line(api: OpenAI) -> None:
    lines = [
        chat_line("ok", "Hi", 3),
        "not json",
        chat_line("bad", "Hi", 0),
        completion_line("other-endpoint", 3),
        chat_line("ok", "Hi", 3),
    ]
    batch = create(api, lines, "/v1/chat/completions")

    assert batch.status == "failed" and batch.failed_at is not None
    assert batch.errors is not None and batch.errors.data is not None
    by_line = {e.line or 0: e for e in batch.errors.data}
    assert sorted(by_line) == [2, 3, 4, 5]
    assert "invalid JSON" in str(by_line[2].message)
    assert "max_tokens" in str(by_line[3].message)
    assert by_line[4].code == "invalid_url"
    assert "duplicate custom_id" in str(by_line[5].message)
    assert api.batches.retrieve(batch.id).status == "failed"
    assert batch.request_counts is not None and batch.request_counts.total == 0


def test_a_completion_window_genq_does_not_take_is_refused(api: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        create(api, [chat_line("a", "Hi", 3)], "/v1/chat/completions", window="forever")
    assert "completion_window" in caught.value.message


def test_unknown_file_and_batch_ids_are_404(api: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        api.files.retrieve("file-" + "0" * 32)
    with pytest.raises(openai.NotFoundError):
        api.files.content("file-nope")
    with pytest.raises(openai.NotFoundError) as caught:
        api.batches.create(
            input_file_id="file-" + "0" * 32,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
    assert caught.value.body["param"] == "input_file_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        api.batches.retrieve("batch_" + "0" * 24)


def test_batches_are_listed_newest_first_in_pages(api: OpenAI) -> None:
    made = [create(api, [chat_line("a", "Hi", 2)], "/v1/chat/completions").id for _ in range(3)]
    first = api.batches.list(limit=2)
    assert [b.id for b in first.data] == made[::-1][:2]
    assert first.has_more
    second = api.batches.list(limit=1, after=first.data[-1].id)
    assert [b.id for b in second.data] == [made[0]]


def test_requests_without_a_valid_key_are_refused_with_401(gateway: Gateway) -> None:
    with OpenAI(base_url=gateway.url, api_key="wrong", max_retries=0) as stranger:
        with pytest.raises(openai.AuthenticationError):
            stranger.files.list()
        with pytest.raises(openai.AuthenticationError):
            stranger.batches.list()
