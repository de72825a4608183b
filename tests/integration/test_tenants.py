"""Tenants at the gateway: a TOML keys file maps keys (one given only by its sha256) to two
tenants and an admin; with OpenAI's own client against a real `genq serve`, every route that
reads, lists, streams or cancels a job, file or batch answers another tenant's id exactly as
an unknown one, lists hold only the key's own tenant's, and an admin sees every tenant's."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from genq import Client
from genq.common.ids import new_batch_id, new_job_id
from genq.common.settings import Settings
from genq.common.store import run
from genq.common.store import tenants as tenant_store
from genq.common.store.files import new_file_id
from genq.common.store.keys import Keys
from genq.common.tenants import TenantPolicy
from ops.localstack import Gateway, RedisServer, Relay, Worker, wait_for

from .gateway_support import TIMEOUT_S, record, sdk, sse, start_gateway
from .support import run_genq

A_KEY, B_KEY, ADMIN_KEY = "sk-team-a", "sk-team-b-hashed", "sk-root"
A_POLICY = TenantPolicy(weight=2, max_queued=100_000)
KEYS_FILE = f"""
[[keys]]
key = "{A_KEY}"
tenant = "team-a"
weight = 2
max_queued = 100000

[[keys]]
sha256 = "{hashlib.sha256(B_KEY.encode()).hexdigest()}"  # the file holds no clear key for B
tenant = "team-b"

[[keys]]
key = "{ADMIN_KEY}"
tenant = "ops"
admin = true
"""
CHAT: Any = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def gateway(
    genq_env: dict[str, str], worker: Worker, relay: Relay, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("tenants")
    keys = root / "keys.toml"
    keys.write_text(KEYS_FILE)
    proc = start_gateway(genq_env, root, GENQ_API_KEYS_FILE=str(keys))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def a(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with sdk(gateway, A_KEY) as client:
        yield client


@pytest.fixture(scope="module")
def b(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with sdk(gateway, B_KEY) as client:
        yield client


@pytest.fixture(scope="module")
def admin(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with sdk(gateway, ADMIN_KEY) as client:
        yield client


def not_found(call: Callable[[], object]) -> dict[str, Any]:
    with pytest.raises(openai.NotFoundError) as caught:
        call()
    body: dict[str, Any] = caught.value.response.json()
    return body


def hidden_as_unknown(call: Callable[[str], object], theirs: str, unknown: str) -> None:
    """`call` on another tenant's id answers the very 404 it answers for an unknown id."""
    seen = not_found(lambda: call(theirs))
    expected = json.loads(json.dumps(not_found(lambda: call(unknown))).replace(unknown, theirs))
    assert seen == expected


def genq_get(api: openai.OpenAI, path: str) -> httpx.Response:
    return api.get(path, cast_to=httpx.Response)


def genq_post(api: openai.OpenAI, path: str) -> httpx.Response:
    return api.post(path, cast_to=httpx.Response)


def first_event(gateway: Gateway, key: str, job_id: str) -> str:
    """The first event's data of a job's stream, reattached with `key`."""
    url = f"{gateway.url}/v1/jobs/{job_id}/stream"
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.stream("GET", url, headers=headers, timeout=TIMEOUT_S) as response:
        assert response.status_code == 200
        return next(sse(response)).data


def upload(api: openai.OpenAI, lines: int = 2) -> str:
    body = {"model": "tiny", "prompt": "Once", "max_tokens": 3}
    text = "".join(
        json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/completions", "body": body})
        + "\n"
        for i in range(lines)
    )
    return api.files.create(file=("in.jsonl", text.encode()), purpose="batch").id


def test_a_wrong_or_missing_key_is_401_and_a_key_given_by_digest_authenticates(
    gateway: Gateway, b: openai.OpenAI
) -> None:
    for key in ("sk-team-a-not", hashlib.sha256(B_KEY.encode()).hexdigest()):
        with sdk(gateway, key) as stranger, pytest.raises(openai.AuthenticationError):
            stranger.models.list()
    assert httpx.get(f"{gateway.url}/v1/models").status_code == 401
    assert "tiny" in {model.id for model in b.models.list()}


def wait_for_policies(settings: Settings) -> None:
    keys = Keys(settings.key_prefix)
    with Client(settings) as client:

        def stored() -> bool:
            return run(client.redis, tenant_store.read_policy(keys, "team-a")) == A_POLICY

        wait_for(stored, TIMEOUT_S, "team-a's policy in Redis")
        assert run(client.redis, tenant_store.read_policy(keys, "team-b")) == TenantPolicy()


def test_the_keys_files_policies_are_stored_for_every_producer(
    gateway: Gateway, settings: Settings
) -> None:
    wait_for_policies(settings)


def test_a_gateway_started_while_redis_is_down_stores_the_policies_once_it_answers(
    genq_env: dict[str, str], tmp_path: Path
) -> None:
    redis_server = RedisServer()  # not started yet
    keys = tmp_path / "keys.toml"
    keys.write_text(KEYS_FILE)
    env = {**genq_env, "GENQ_REDIS_URL": redis_server.url, "GENQ_API_KEYS_FILE": str(keys)}
    gateway = start_gateway(env, tmp_path)
    try:
        with sdk(gateway, A_KEY) as api, pytest.raises(openai.APIStatusError) as caught:
            api.files.list()
        assert caught.value.status_code == 503
        redis_server.start()
        wait_for_policies(Settings(redis_url=redis_server.url))
    finally:
        gateway.stop()
        redis_server.stop()


def test_a_job_is_streamed_reattached_and_cancelled_by_its_tenant_only(
    gateway: Gateway,
    a: openai.OpenAI,
    b: openai.OpenAI,
    admin: openai.OpenAI,
    settings: Settings,
) -> None:
    raw = a.chat.completions.with_raw_response.create(
        model="tiny", messages=CHAT, max_tokens=4, seed=1, stream=True
    )
    job_id = raw.headers["x-genq-job-id"]
    assert list(raw.parse())  # streamed to its end
    assert record(settings, job_id).tenant == "team-a"
    unknown = new_job_id()

    hidden_as_unknown(lambda i: genq_get(b, f"/jobs/{i}/stream"), job_id, unknown)
    hidden_as_unknown(lambda i: genq_post(b, f"/jobs/{i}/cancel"), job_id, unknown)
    assert first_event(gateway, A_KEY, job_id) == first_event(gateway, ADMIN_KEY, job_id)
    for owner in (a, admin):
        assert genq_post(owner, f"/jobs/{job_id}/cancel").json()["id"] == job_id


def test_files_are_read_listed_and_deleted_by_their_tenant_only(
    a: openai.OpenAI, b: openai.OpenAI, admin: openai.OpenAI
) -> None:
    mine, theirs, unknown = upload(a), upload(b), new_file_id()

    hidden_as_unknown(b.files.retrieve, mine, unknown)
    hidden_as_unknown(b.files.content, mine, unknown)
    hidden_as_unknown(b.files.delete, mine, unknown)
    assert a.files.retrieve(mine).id == mine  # B's delete did nothing
    listed = {name: {f.id for f in api.files.list()} for name, api in [("a", a), ("b", b)]}
    assert mine in listed["a"] and theirs not in listed["a"]
    assert theirs in listed["b"] and mine not in listed["b"]
    assert {mine, theirs} <= {f.id for f in admin.files.list()}
    assert admin.files.content(mine).text == a.files.content(mine).text


def test_batches_are_read_listed_and_cancelled_by_their_tenant_only(
    a: openai.OpenAI, b: openai.OpenAI, admin: openai.OpenAI, settings: Settings
) -> None:
    input_id = upload(a)
    with pytest.raises(openai.NotFoundError) as caught:  # A's file is not B's to batch
        b.batches.create(
            input_file_id=input_id, endpoint="/v1/completions", completion_window="24h"
        )
    assert caught.value.param == "input_file_id"
    mine = a.batches.create(
        input_file_id=input_id, endpoint="/v1/completions", completion_window="24h"
    )
    theirs = b.batches.create(
        input_file_id=upload(b, 1), endpoint="/v1/completions", completion_window="24h"
    )
    unknown = new_batch_id()

    hidden_as_unknown(b.batches.retrieve, mine.id, unknown)
    hidden_as_unknown(b.batches.cancel, mine.id, unknown)
    assert [x.id for x in a.batches.list(limit=100)] == [mine.id]
    assert [x.id for x in b.batches.list(limit=100)] == [theirs.id]
    assert {mine.id, theirs.id} <= {x.id for x in admin.batches.list(limit=100)}
    with Client(settings) as client:
        assert client.batch(mine.id).status().tenant == "team-a"

    def ended() -> bool:
        return a.batches.retrieve(mine.id).status == "completed"

    wait_for(ended, TIMEOUT_S, f"batch {mine.id}")
    output = a.batches.retrieve(mine.id).output_file_id
    assert output is not None and len(a.files.content(output).text.splitlines()) == 2
    hidden_as_unknown(b.files.content, output, new_file_id())
    assert admin.batches.retrieve(mine.id).output_file_id == output


def test_the_cli_submits_as_the_tenant_it_is_given(
    genq_env: dict[str, str], worker: Worker, settings: Settings, tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"custom_id": "c1", "model": "tiny", "prompt": "Hi", "max_tokens": 2}\n')
    submitted = run_genq(genq_env, "submit", str(jobs), "--tenant", "team-c", "--wait")
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.split()[0]
    with Client(settings) as client:
        batch = client.batch(batch_id)
        assert batch.status().tenant == "team-c"
        assert {record(settings, job_id).tenant for job_id in batch.job_ids()} == {"team-c"}
    refused = run_genq(genq_env, "run", "Hi", "-n", "2", "--tenant", "team:c")
    assert refused.returncode == 2 and "tenant must be" in refused.stderr
