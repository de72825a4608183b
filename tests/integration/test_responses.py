"""The Responses API on real `genq serve` gateways, through OpenAI's own client: streamed and
background responses, events numbered without gap or repeat, `starting_after` from another
gateway, cancel and delete, tenants, and the fields genq refuses with nothing queued."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from genq import Client
from genq.common.schemas import JobState
from genq.common.settings import Settings
from genq.common.store import responses as response_store
from genq.common.store import run
from genq.common.store.responses import ResponseRecord
from ops.localstack import Gateway, Relay, Worker, settings_for, wait_for

from .gateway_support import TIMEOUT_S, record, sdk, sse, start_gateway

KEY, OTHER_KEY, ADMIN_KEY = "sk-responses-a", "sk-responses-b", "sk-responses-root"
KEYS_FILE = f"""
[[keys]]
key = "{KEY}"
tenant = "team-a"

[[keys]]
key = "{OTHER_KEY}"
tenant = "team-b"

[[keys]]
key = "{ADMIN_KEY}"
tenant = "ops"
admin = true
"""
BASE: dict[str, Any] = {"model": "tiny", "input": "Say something long.", "max_output_tokens": 48}
SEEDED = {"seed": 11, "temperature": 0.9}
LONG: dict[str, Any] = {"model": "tiny", "input": "a", "max_output_tokens": 1_000_000}
LONG_EXTRA = {"seed": 8, "ignore_eos": True}
ENDED = {"completed", "incomplete", "cancelled", "failed"}


@pytest.fixture(scope="module")
def gateways(
    genq_env: dict[str, str], worker: Worker, relay: Relay, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, Gateway]]:
    """Two gateway processes on one stack: a response made on one is followed on the other."""
    logs = tmp_path_factory.mktemp("logs")
    keys = logs / "keys.toml"
    keys.write_text(KEYS_FILE)
    first = start_gateway(genq_env, logs, "first", GENQ_API_KEYS_FILE=str(keys))
    second = start_gateway(genq_env, logs, "second", GENQ_API_KEYS_FILE=str(keys))
    yield first, second
    second.stop()
    first.stop()


@pytest.fixture(scope="module")
def api(gateways: tuple[Gateway, Gateway]) -> Iterator[openai.OpenAI]:
    with sdk(gateways[0], KEY) as client:
        yield client


@pytest.fixture(scope="module")
def other(gateways: tuple[Gateway, Gateway]) -> Iterator[openai.OpenAI]:
    with sdk(gateways[1], KEY) as client:
        yield client


def texts(events: Iterable[Any]) -> str:
    return "".join(e.delta for e in events if e.type == "response.output_text.delta")


def numbers(events: Iterable[Any]) -> list[int]:
    return [e.sequence_number for e in events]


def ended(api: openai.OpenAI, response_id: str) -> Any:
    """The response once it ended, polled."""
    seen: list[Any] = []

    def done() -> bool:
        seen.append(api.responses.retrieve(response_id))
        return seen[-1].status in ENDED

    wait_for(done, TIMEOUT_S, f"response {response_id} to end")
    return seen[-1]


def test_a_streamed_response_numbers_its_events_and_streams_its_output(
    api: openai.OpenAI,
) -> None:
    with api.responses.create(**BASE, stream=True, extra_body=SEEDED) as stream:
        events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[2:4] == ["response.output_item.added", "response.content_part.added"]
    closing = ["response.output_text.done", "response.content_part.done"]
    assert kinds[-4:] == [*closing, "response.output_item.done", "response.incomplete"]
    assert numbers(events) == list(range(len(events)))
    final = events[-1].response
    assert final.incomplete_details.reason == "max_output_tokens"
    assert final.usage.output_tokens == 48
    assert texts(events) == final.output_text == events[-4].text != ""


def test_a_background_response_polled_to_its_end_has_the_streamed_runs_text(
    api: openai.OpenAI,
) -> None:
    with api.responses.create(**BASE, stream=True, extra_body=SEEDED) as stream:
        streamed = texts(stream)
    created = api.responses.create(**BASE, background=True, extra_body=SEEDED)
    assert created.status == "queued" and created.background is True
    assert created.id.startswith("resp_") and created.output == []
    final = ended(api, created.id)
    assert final.status == "incomplete" and final.output_text == streamed


def test_a_background_stream_resumed_on_another_gateway_misses_and_repeats_nothing(
    api: openai.OpenAI, other: openai.OpenAI
) -> None:
    body = {**BASE, "max_output_tokens": 200, "background": True}
    with api.responses.create(**body, stream=True, extra_body=SEEDED) as stream:
        before = []
        for event in stream:
            before.append(event)
            if texts(before) and len(before) >= 8:
                break  # the client drops
    response_id = before[0].response.id
    assert before[0].response.status == "queued" and before[1].type == "response.queued"
    last = before[-1].sequence_number
    with other.responses.retrieve(response_id, stream=True, starting_after=last) as stream:
        after: list[Any] = list(stream)
    assert numbers(before + after) == list(range(len(before) + len(after)))
    final = other.responses.retrieve(response_id)
    assert texts(before + after) == final.output_text == after[-1].response.output_text
    # A reattach from the start replays the same events, numbered the same.
    with api.responses.retrieve(response_id, stream=True) as stream:
        again = list(stream)
    assert [e.model_dump() for e in again] == [e.model_dump() for e in before + after]


def test_a_browsers_last_event_id_resumes_after_that_sequence_number(
    api: openai.OpenAI, gateways: tuple[Gateway, Gateway]
) -> None:
    # Its end-of-sequence banned, so that it ends at its length: `incomplete`, whatever the seed.
    extra = {"ignore_eos": True}
    response_id = api.responses.create(**BASE, background=True, extra_body=extra).id
    headers = {"Authorization": f"Bearer {KEY}", "Last-Event-ID": "3"}
    url = f"{gateways[1].url}/v1/responses/{response_id}?stream=true"
    with httpx.Client(timeout=TIMEOUT_S) as http, http.stream("GET", url, headers=headers) as got:
        rest = list(sse(got))
    assert [int(e.id) for e in rest] == [e.json["sequence_number"] for e in rest]
    assert rest[0].id == "4" and rest[-1].json["type"] == "response.incomplete"


def test_a_non_background_response_waits_for_its_object(api: openai.OpenAI) -> None:
    response = api.responses.create(
        model="tiny",
        instructions="Answer briefly.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Hello"}]}],
        max_output_tokens=16,
        metadata={"run": "one"},
        include=["message.output_text.logprobs"],
        top_logprobs=2,
    )
    assert response.status in {"completed", "incomplete"} and response.output_text
    assert response.metadata == {"run": "one"} and response.instructions == "Answer briefly."
    item: Any = response.output[0]
    logprobs = item.content[0].logprobs
    assert logprobs and all(len(p.top_logprobs) == 2 for p in logprobs)
    assert api.responses.retrieve(response.id).output_text == response.output_text


def test_cancel_mid_stream_keeps_the_partial_output_and_answers_again_the_same(
    api: openai.OpenAI, settings: Settings
) -> None:
    with api.responses.create(**LONG, background=True, stream=True, extra_body=LONG_EXTRA) as s:
        events = []
        for event in s:
            events.append(event)
            if len(texts(events)) >= 20:
                cancelled = api.responses.cancel(events[0].response.id)
                break
        rest = list(s)
    assert cancelled.status == "cancelled"
    assert cancelled.output_text.startswith(texts(events)) and cancelled.usage is not None
    assert rest[-1].type == "response.cancelled"
    assert texts(events + rest) == cancelled.output_text
    assert api.responses.cancel(cancelled.id).model_dump() == cancelled.model_dump()
    job_id = cancelled.id.removeprefix("resp_")
    assert record(settings, job_id).state == JobState.CANCELLED


def test_unknown_and_deleted_responses_answer_404(api: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        api.responses.retrieve("resp_0123456789abcdef0123456789abcdef")
    response = api.responses.create(**BASE, background=True)
    api.responses.delete(response.id)
    for call in (api.responses.retrieve, api.responses.cancel, api.responses.delete):
        with pytest.raises(openai.NotFoundError):
            call(response.id)


def test_another_tenants_response_answers_as_an_unknown_one(
    api: openai.OpenAI, gateways: tuple[Gateway, Gateway], settings: Settings
) -> None:
    response = api.responses.create(**BASE, background=True)
    assert record(settings, response.id.removeprefix("resp_")).tenant == "team-a"
    unknown = "resp_0123456789abcdef0123456789abcdef"
    with sdk(gateways[1], OTHER_KEY) as theirs:
        bodies = []
        for ident in (response.id, unknown):
            for call in (theirs.responses.retrieve, theirs.responses.cancel):
                with pytest.raises(openai.NotFoundError) as caught:
                    call(ident)
                bodies.append(caught.value.body)
            with pytest.raises(openai.NotFoundError):
                theirs.responses.retrieve(ident, stream=True)
        with pytest.raises(openai.NotFoundError):
            theirs.responses.delete(response.id)
    assert [str(b).replace(response.id, unknown) for b in bodies[:2]] == [
        str(b) for b in bodies[2:]
    ]
    with sdk(gateways[1], ADMIN_KEY) as admin:
        assert ended(admin, response.id).output_text == ended(api, response.id).output_text


def job_count(redis_client: redis.Redis) -> int:
    return sum(1 for _ in redis_client.scan_iter(match="genq:{*}:job", count=1000))


REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"tools": [{"type": "function", "name": "f", "parameters": {}}]}, "tools"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"previous_response_id": "resp_0123456789abcdef0123456789abcdef"}, "previous_response_id"),
    ({"reasoning": {"effort": "low"}}, "reasoning"),
    ({"include": ["file_search_call.results"]}, "include[0]"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, ""),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}, "input[0]"),
    ({"input": []}, "input"),
]


@pytest.mark.parametrize(("fields", "param"), REFUSED, ids=[p or "input_image" for _, p in REFUSED])
def test_each_unsupported_field_is_refused_naming_it_with_nothing_queued(
    api: openai.OpenAI, redis_client: redis.Redis, fields: dict[str, Any], param: str
) -> None:
    before = job_count(redis_client)
    body = {**BASE, "background": True, **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        api.responses.create(**body)
    assert caught.value.body["param"] == (param or "input[0].content[0]")  # type: ignore[index]
    assert job_count(redis_client) == before


def test_a_lost_non_background_stream_is_cancelled_after_the_grace(
    genq_env: dict[str, str], worker: Worker, relay: Relay, tmp_path: Path, settings: Settings
) -> None:
    gateway = start_gateway(genq_env, tmp_path, GENQ_REATTACH_GRACE_S="0")
    try:
        with sdk(gateway) as api:
            with api.responses.create(**LONG, stream=True, extra_body=LONG_EXTRA) as stream:
                first = next(iter(stream))
            final = ended(api, first.response.id)
    finally:
        gateway.stop()
    assert final.status == "cancelled"


def test_a_read_keeps_a_response_as_long_as_its_job(
    settings: Settings, redis_client: redis.Redis
) -> None:
    with Client(settings) as client:
        handle = client.submit("kept", model="tiny", max_tokens=4)
        handle.result(timeout=TIMEOUT_S)
        mine = ResponseRecord(created_at=int(time.time()), model="tiny")
        run(client.redis, response_store.create(client.keys, handle.job_id, mine, 60))
        assert run(client.redis, response_store.read(client.keys, handle.job_id)) == mine
    job_ms = redis_client.pttl(f"genq:{{{handle.job_id}}}:job")
    assert job_ms > 60_000
    assert redis_client.pttl(f"genq:{{{handle.job_id}}}:resp") > 60_000


def test_a_response_is_kept_as_long_as_its_job_from_the_jobs_end(
    genq_env: dict[str, str], databases: Iterator[int]
) -> None:
    """No worker serves this database: the job waits until its cancel ends it."""
    url = genq_env["GENQ_REDIS_URL"].rsplit("/", 1)[0] + f"/{next(databases)}"
    with Client(settings_for({**genq_env, "GENQ_REDIS_URL": url})) as client:
        handle = client.submit("kept", model="tiny", max_tokens=4)
        mine = ResponseRecord(created_at=int(time.time()), model="tiny")
        run(client.redis, response_store.create(client.keys, handle.job_id, mine, 60))
        handle.cancel()  # its end, FINISH, keeps the response's record with the job's
        assert client.record(handle.job_id).state == JobState.CANCELLED
        key = response_store.record_key(client.keys, handle.job_id)
        with redis.Redis.from_url(url) as direct:  # before any read, which extends it too
            assert direct.pttl(key) > 60_000
        assert run(client.redis, response_store.read(client.keys, handle.job_id)) == mine
