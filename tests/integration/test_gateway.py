"""`genq serve` speaks OpenAI's API: OpenAI's own client gets the same text streaming or
not, usage, genq's extension fields, and OpenAI's error bodies with the right statuses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from genq import Client
from genq.common.errors import QueueFull
from genq.common.schemas import JobState
from genq.common.settings import Settings
from genq.common.store import queues, run
from ops.localstack import Gateway, Relay, Worker, free_port, settings_for

from .gateway_support import TIMEOUT_S, record, sdk, sse, start_gateway

CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def gateway(
    genq_env: dict[str, str], worker: Worker, relay: Relay, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    proc = start_gateway(genq_env, tmp_path_factory.mktemp("logs"))
    yield proc
    proc.stop()


@pytest.fixture
def api(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with sdk(gateway) as client:
        yield client


def test_chat_streams_the_text_it_answers_without_streaming(api: openai.OpenAI) -> None:
    args: dict[str, Any] = {"model": "tiny", "messages": CHAT, "max_tokens": 24, "seed": 5}
    raw = api.chat.completions.with_raw_response.create(**args)
    answer = raw.parse()
    job_id = raw.headers["x-genq-job-id"]
    assert answer.id == f"chatcmpl-{job_id}" and answer.object == "chat.completion"
    assert answer.choices[0].message.role == "assistant"
    chunks = list(api.chat.completions.create(**args, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == answer.choices[0].message.content != ""
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == answer.choices[0].finish_reason
    assert answer.usage is not None and answer.usage.completion_tokens <= 24


def test_completions_stream_the_text_they_answer_without_streaming(api: openai.OpenAI) -> None:
    args: dict[str, Any] = {"model": "tiny", "prompt": ["once"], "max_tokens": 24, "seed": 9}
    answer = api.completions.create(**args)
    assert answer.id.startswith("cmpl-") and answer.object == "text_completion"
    chunks = list(api.completions.create(**args, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == answer.choices[0].text != ""
    assert {c.id for c in chunks} == {chunks[0].id} != {answer.id}  # a job each


def test_include_usage_ends_the_stream_with_usage_and_no_choices(api: openai.OpenAI) -> None:
    chunks = list(
        api.completions.create(
            model="tiny",
            prompt="a",
            max_tokens=10,
            seed=1,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == 10
    assert last.usage.total_tokens == last.usage.prompt_tokens + 10
    assert all(c.usage is None for c in chunks[:-1])


def test_extension_fields_reach_the_job(api: openai.OpenAI, settings: Settings) -> None:
    extra = {
        "ignore_eos": True,
        "window_tokens": 8,
        "max_windows": 2,
        "top_k": 3,
        "min_p": 0.1,
        # 1.0: any other value fails the job in the worker's sampler today (llama.cpp's
        # llama_sampler_init_penalties takes 5 arguments in this build;
        # workers/runtime/sampling.py).
        "repeat_penalty": 1.0,
        "deterministic": True,
        "priority": 7,
    }
    raw = api.completions.with_raw_response.create(
        model="tiny", prompt="x", max_tokens=100, seed=3, stop=["zzzz"], extra_body=extra
    )
    answer = raw.parse()
    assert answer.choices[0].finish_reason == "length"  # two windows of 8 tokens
    assert answer.usage is not None and answer.usage.completion_tokens == 16
    job = record(settings, raw.headers["x-genq-job-id"])
    spec = job.spec
    assert (spec.window_tokens, spec.max_windows, spec.top_k, spec.min_p) == (8, 2, 3, 0.1)
    assert (spec.repeat_penalty, spec.deterministic, spec.ignore_eos) == (1.0, True, True)
    assert spec.stop == ["zzzz"] and job.priority == 7


def test_logprobs_come_with_each_token(api: openai.OpenAI) -> None:
    chat = api.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=5, seed=2, logprobs=True, top_logprobs=2
    )
    content = chat.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and all(len(t.top_logprobs) == 2 for t in content)
    text = api.completions.create(model="tiny", prompt="a", max_tokens=5, seed=2, logprobs=1)
    assert text.choices[0].logprobs is not None
    assert len(text.choices[0].logprobs.tokens or []) == text.usage.completion_tokens  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"presence_penalty": 1}, "presence_penalty"),
        ({"max_tokens": "ten"}, "max_tokens"),
        ({"temperature": 9}, "temperature"),
        ({"priority": 12}, "priority"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"tools": []}, "tools"),
        ({"stream": "yes"}, "stream"),  # OpenAI takes JSON's true and false only
        ({"stream": "true"}, "stream"),
        ({"stream": 1}, "stream"),
        ({"logprobs": "true"}, "logprobs"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    api: openai.OpenAI, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(model="tiny", messages=CHAT, extra_body=extra)
    error = caught.value.body
    assert caught.value.status_code == 400
    assert isinstance(error, dict) and error["param"] == param, error
    assert param in error["message"] and error["type"] == "invalid_request_error"


def test_a_prompt_list_of_two_is_a_400(api: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        api.completions.create(model="tiny", prompt=["a", "b"])
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "prompt"


def test_an_unknown_model_is_a_404(api: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        api.completions.create(model="no-such-model", prompt="a")
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "model_not_found" and body["param"] == "model"


def test_a_request_without_a_valid_key_is_a_401(genq_env: dict[str, str], tmp_path: Path) -> None:
    gateway = start_gateway(genq_env, tmp_path, GENQ_API_KEYS="right-key")
    try:
        with (
            sdk(gateway, key="wrong-key") as api,
            pytest.raises(openai.AuthenticationError) as caught,
        ):
            api.completions.create(model="tiny", prompt="a")
        body = caught.value.body
        assert isinstance(body, dict) and body["code"] == "invalid_api_key"
        with sdk(gateway, key="right-key") as api:
            assert next(m.id for m in api.models.list())
    finally:
        gateway.stop()


def test_redis_down_is_a_503_on_every_route(genq_env: dict[str, str], tmp_path: Path) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    # No retries of reads (the cancel's look-up rides through GENQ_REDIS_RETRY_S otherwise).
    gateway = start_gateway(genq_env, tmp_path, GENQ_REDIS_URL=closed, GENQ_REDIS_RETRY_S="0")
    try:
        with sdk(gateway) as api, pytest.raises(openai.InternalServerError) as caught:
            api.chat.completions.create(model="tiny", messages=CHAT)
        body = caught.value.body
        assert caught.value.status_code == 503
        assert isinstance(body, dict) and body["code"] == "redis_unavailable"
        job = "0" * 32
        with httpx.Client(base_url=gateway.url, timeout=TIMEOUT_S) as http:
            for answer in (
                http.get(f"/v1/jobs/{job}/stream"),
                http.get(f"/v1/jobs/{job}/stream", headers={"Last-Event-ID": "0-3"}),
                http.post(f"/v1/jobs/{job}/cancel"),
                http.get("/v1/files"),
                http.get("/v1/batches"),
            ):
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"]["code"] == "redis_unavailable"
    finally:
        gateway.stop()


def test_reattaching_to_an_unknown_job_or_from_a_bad_event_id_is_refused(
    gateway: Gateway,
) -> None:
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT_S) as http:
        missing = http.get(f"/v1/jobs/{'0' * 32}/stream")
        assert missing.status_code == 404 and missing.json()["error"]["param"] == "job_id"
        bad = http.get(f"/v1/jobs/{'0' * 32}/stream", headers={"Last-Event-ID": "x"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "last_event_id"


def test_a_cancelled_job_finishes_its_stream_with_stop(
    gateway: Gateway, settings: Settings
) -> None:
    body = {"model": "tiny", "prompt": "a", "max_tokens": 1_000_000, "stream": True}
    body |= {"ignore_eos": True, "seed": 4}
    with (
        httpx.Client(base_url=gateway.url, timeout=TIMEOUT_S) as http,
        http.stream("POST", "/v1/completions", json=body) as response,
    ):
        job_id = response.headers["x-genq-job-id"]
        events = sse(response)
        next(e for e in events if e.text)
        cancelled = http.post(f"/v1/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200
        rest = list(events)
    assert rest[-1].data == "[DONE]"
    assert rest[-2].json["choices"][0]["finish_reason"] == "stop"
    assert record(settings, job_id).state == JobState.CANCELLED


def test_a_full_queue_is_a_429_and_nothing_is_queued(
    genq_env: dict[str, str], databases: Iterator[int], tmp_path: Path
) -> None:
    """No worker serves this database: two waiting jobs fill a queue of at most two."""
    url = genq_env["GENQ_REDIS_URL"].rsplit("/", 1)[0] + f"/{next(databases)}"
    env = {**genq_env, "GENQ_REDIS_URL": url, "GENQ_MAX_QUEUED": "2"}
    gateway = start_gateway(env, tmp_path)
    try:
        with Client(settings_for(env)) as client:
            for seed in (1, 2):
                client.submit("fill", seed=seed, max_tokens=4)
            with pytest.raises(QueueFull, match="GENQ_MAX_QUEUED allows \\(2\\)"):
                client.submit("one more", max_tokens=4)
            with sdk(gateway) as api, pytest.raises(openai.RateLimitError) as caught:
                api.chat.completions.create(model="tiny", messages=CHAT)
            body = caught.value.body
            assert caught.value.status_code == 429
            assert isinstance(body, dict) and body["code"] == "queue_full"
            assert "tiny" in body["message"]
            # The refused jobs left nothing in the queue.
            assert run(client.redis, queues.depth("cpu.tiny")) == 2
    finally:
        gateway.stop()
