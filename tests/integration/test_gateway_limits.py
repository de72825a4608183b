"""`genq serve` under bad input and load: a prompt far past the context is refused at once, a
slow prompt check runs off the event loop, a bad logit_bias is refused before queueing, a
submit the gateway cannot record leaves no job running, a reattach past the stream's end is
answered, an unknown job is a 404, an upload is read no further than its limit, a request
that waits for its result and disconnects gets the reattach grace, past its most streams
the gateway answers 429 and queues nothing, and /v1/models is read again only when the
registry file changes."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from genq import Client
from genq.common.registry import ModelRegistry
from genq.common.routing import queue_name
from genq.common.schemas import JobState
from genq.common.settings import Settings
from genq.common.store import gateway as gateway_store
from genq.common.store import leases, queues, run
from genq.common.store.keys import Keys
from ops.localstack import Gateway, Relay, Worker, settings_for, wait_for

from .conftest import Stack
from .gateway_support import TIMEOUT_S, position, record, sdk, sse, start_gateway

FILE_BYTES_MAX = 64 * 1024  # this module's gateway's upload limit
GRACE_S = 1.0
LONG = {"model": "tiny", "prompt": "a", "max_tokens": 1_000_000, "seed": 3, "ignore_eos": True}
# tiny's own file with a context so large that a prompt of SLOW_PROMPT characters of one
# letter is tokenized whole (seconds: the cost grows with the square of a run with no space)
# before it is refused.
BIG_N_CTX, SLOW_PROMPT = 100_000, 200_000


@pytest.fixture(scope="module")
def gateway(
    genq_env: dict[str, str],
    settings: Settings,
    worker: Worker,
    relay: Relay,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("limits")
    tiny = ModelRegistry.from_settings(settings).local_path("tiny")
    models = root / "models.toml"
    models.write_text(f'[models.big]\nbackend = "llama"\npath = "{tiny}"\nn_ctx = {BIG_N_CTX}\n')
    proc = start_gateway(
        genq_env,
        root,
        GENQ_MODELS_FILE=str(models),
        GENQ_FILE_BYTES_MAX=str(FILE_BYTES_MAX),
        GENQ_REATTACH_GRACE_S=str(GRACE_S),
    )
    yield proc
    proc.stop()


@pytest.fixture
def api(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with sdk(gateway) as client:
        yield client


@pytest.fixture
def http(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT_S) as client:
        yield client


def error_of(answer: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = answer.json()["error"]
    return error


# -- prompts -------------------------------------------------------------------------------


def test_a_million_character_prompt_is_refused_from_a_prefix_of_it(api: openai.OpenAI) -> None:
    """It once took 110 s to tokenize whole, and blocked every other request meanwhile."""
    with pytest.raises(openai.BadRequestError) as caught:
        api.completions.create(model="tiny", prompt="a" * 1_000_000, max_tokens=4)
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "prompt_too_long"
    assert "prompt is at least 2057 tokens" in body["message"]  # (256 + 1) x 8 bytes and a BOS


def test_a_slow_prompt_check_does_not_delay_another_streams_chunks(
    gateway: Gateway, http: httpx.Client
) -> None:
    """A stream runs while another request's prompt is tokenized whole (for `big`): chunks
    keep coming between that request's send and its answer, which they could not if the
    check held the event loop."""
    arrivals: list[float] = []
    with http.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as response:
        job_id, events = response.headers["x-genq-job-id"], sse(response)
        next(e for e in events if e.text)  # flowing
        reader = threading.Thread(target=lambda: arrivals.extend(time.monotonic() for _ in events))
        reader.start()
        with httpx.Client(base_url=gateway.url, timeout=TIMEOUT_S) as other:
            sent = time.monotonic()
            refused = other.post(
                "/v1/completions", json={"model": "big", "prompt": "a" * SLOW_PROMPT}
            )
            answered = time.monotonic()
            other.post(f"/v1/jobs/{job_id}/cancel")
        reader.join(TIMEOUT_S)
    assert refused.status_code == 400
    assert f"prompt is {SLOW_PROMPT + 1} tokens" in error_of(refused)["message"]  # all of it
    assert sum(1 for at in arrivals if sent < at < answered) >= 2


def test_a_logit_bias_id_outside_the_vocabulary_is_a_400_before_queueing(
    api: openai.OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        api.completions.create(model="tiny", prompt="a", max_tokens=4, logit_bias={"276": 5})
    assert "vocabulary of 276 tokens (ids 0-275)" in caught.value.message
    inside = api.completions.create(model="tiny", prompt="a", max_tokens=4, logit_bias={"275": 5})
    assert inside.choices[0].finish_reason in {"stop", "length"}


# -- jobs ----------------------------------------------------------------------------------


def test_a_submit_the_gateway_cannot_record_leaves_its_job_cancelled(
    genq_env: dict[str, str], databases: Iterator[int], tmp_path: Path
) -> None:
    """No worker serves this database, and its detach index is not a sorted set: the job is
    queued, then the stream's deadline cannot be written."""
    url = genq_env["GENQ_REDIS_URL"].rsplit("/", 1)[0] + f"/{next(databases)}"
    env = {**genq_env, "GENQ_REDIS_URL": url}
    with redis.Redis.from_url(url) as r:
        r.set(gateway_store.detach_key(Keys()), "not a sorted set")
    gateway = start_gateway(env, tmp_path)
    try:
        with httpx.Client(base_url=gateway.url, timeout=TIMEOUT_S) as http:
            answer = http.post("/v1/completions", json={**LONG, "stream": True})
    finally:
        gateway.stop()
    job_id = answer.headers["x-genq-job-id"]
    assert answer.status_code == 503 and error_of(answer)["code"] == "redis_unavailable"
    assert f"job {job_id} was cancelled" in error_of(answer)["message"]
    assert record(settings_for(env), job_id).state == JobState.CANCELLED


def test_a_last_event_id_at_the_end_gets_done_and_one_past_it_a_400(http: httpx.Client) -> None:
    body = {"model": "tiny", "prompt": "a", "max_tokens": 6, "seed": 2, "stream": True}
    with http.stream("POST", "/v1/completions", json=body) as response:
        job_id, whole = response.headers["x-genq-job-id"], list(sse(response))
    last = whole[-1]
    assert last.data == "[DONE]"
    with http.stream(
        "GET", f"/v1/jobs/{job_id}/stream", headers={"Last-Event-ID": last.id}
    ) as response:
        assert response.status_code == 200 and list(sse(response)) == [last]
    epoch, seq = position(last.id)
    for past in (f"{epoch}-{seq + 1}", f"{epoch + 1}-1"):
        refused = http.get(f"/v1/jobs/{job_id}/stream", headers={"Last-Event-ID": past})
        assert refused.status_code == 400 and error_of(refused)["param"] == "last_event_id"
        assert past in error_of(refused)["message"] and last.id in error_of(refused)["message"]


def test_cancelling_an_unknown_job_is_a_404_and_a_long_id_is_echoed_cut(
    http: httpx.Client,
) -> None:
    unknown = http.post(f"/v1/jobs/{'0' * 32}/cancel")
    assert unknown.status_code == 404 and error_of(unknown)["param"] == "job_id"
    assert error_of(unknown)["message"].startswith(f"no job {'0' * 32}")
    long_id = "a" * 10_000
    for answer in (
        http.post(f"/v1/jobs/{long_id}/cancel"),
        http.get(f"/v1/jobs/{long_id}/stream"),
        http.get(f"/v1/files/{long_id}"),
        http.get(f"/v1/batches/{long_id}"),
        http.get(f"/v1/models/{long_id}"),
    ):
        assert answer.status_code == 404 and len(answer.text) < 500, answer.text[:200]


def test_a_dropped_request_waiting_for_its_result_is_cancelled_after_the_grace(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()
    stack.relay(), stack.worker("a")
    gateway = start_gateway(stack.env, stack.logs, GENQ_REATTACH_GRACE_S=str(GRACE_S))
    stack.procs.append(gateway)
    settings, running = stack.settings, list[str]()

    def started() -> bool:
        with Client(settings) as client:
            found = run(client.redis, leases.lapsed(client.keys, 2**53, 10))
        running[:] = found
        return bool(running)

    with socket.create_connection(("127.0.0.1", gateway.port), timeout=TIMEOUT_S) as conn:
        conn.sendall(http_request("POST", "/v1/completions", json.dumps(LONG).encode()))
        wait_for(started, TIMEOUT_S, "the request's job to run")
        job_id = running[0]
        assert deadline(settings, job_id) is None  # its waiting client counts as attached
    left_at = time.time()
    wait_for(lambda: deadline(settings, job_id) is not None, TIMEOUT_S, "a reattach deadline")
    wait_for(lambda: record(settings, job_id).state == JobState.CANCELLED, TIMEOUT_S, "the cancel")
    assert time.time() - left_at >= GRACE_S  # not before the grace


def test_past_its_most_streams_the_gateway_answers_429_and_queues_nothing(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()
    stack.relay(), stack.worker("a")
    gateway = start_gateway(
        stack.env, stack.logs, GENQ_GATEWAY_MAX_STREAMS="2", GENQ_REATTACH_GRACE_S=str(GRACE_S)
    )
    stack.procs.append(gateway)
    streamed = {**LONG, "stream": True}
    short = {"model": "tiny", "prompt": "a", "max_tokens": 2}
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT_S) as http:
        with (
            http.stream("POST", "/v1/completions", json=streamed) as first,
            http.stream("POST", "/v1/completions", json=streamed) as second,
        ):
            assert (first.status_code, second.status_code) == (200, 200)
            assert jobs_held(stack.settings) == 2
            for body in (streamed, short):
                refused = http.post("/v1/completions", json=body)
                assert refused.status_code == 429
                assert error_of(refused)["code"] == "too_many_streams"
            job_id = first.headers["x-genq-job-id"]
            assert http.get(f"/v1/jobs/{job_id}/stream").status_code == 429
            assert jobs_held(stack.settings) == 2  # the refused requests queued nothing
        # Both streams closed: they count out, and their jobs are cancelled after the grace.
        wait_for(
            lambda: http.post("/v1/completions", json=short).status_code == 200,
            TIMEOUT_S,
            "a request admitted once the streams closed",
        )


def jobs_held(settings: Settings) -> int:
    """Jobs running (leased) or waiting in tiny's queue."""
    with Client(settings) as client:
        running = run(client.redis, leases.lapsed(client.keys, 2**53, 100))
        return len(running) + run(client.redis, queues.depth(queue_name("cpu", "tiny")))


def deadline(settings: Settings, job_id: str) -> float | None:
    with Client(settings) as client:
        return run(client.redis, gateway_store.deadlines(client.keys, [job_id]))[0]


# -- files ---------------------------------------------------------------------------------


def http_request(
    method: str, path: str, body: bytes, headers: dict[str, str] | None = None
) -> bytes:
    """An HTTP/1.1 request's bytes: with `headers`, or those of a JSON body of its length."""
    fields = headers or {"Content-Type": "application/json", "Content-Length": str(len(body))}
    head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode() + body


BOUNDARY = "genqtestboundary"
FORM = f"multipart/form-data; boundary={BOUNDARY}"


def form_head() -> bytes:
    """A multipart body up to the file's content."""
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="b.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def status_of_sent(gateway: Gateway, data: bytes) -> int:
    """Send `data` (a request whose body does not end) and read the status it is answered."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=TIMEOUT_S) as conn:
        conn.sendall(data)
        reply = b""
        while b"\r\n" not in reply:
            reply += conn.recv(4096) or b"\r\n"
    return int(reply.split(b" ", 2)[1])


def test_an_upload_declaring_more_than_the_limit_is_refused_before_it_is_sent(
    gateway: Gateway,
) -> None:
    """A gigabyte declared, a kilobyte sent: the answer comes without the rest."""
    head = http_request(
        "POST", "/v1/files", b"", {"Content-Type": FORM, "Content-Length": "1073741824"}
    )
    assert status_of_sent(gateway, head + form_head() + b"x" * 1024) == 413


def test_a_chunked_upload_is_refused_once_it_passes_the_limit(gateway: Gateway) -> None:
    """No length declared; four times the limit sent, and the body never ends."""
    chunked = {"Content-Type": FORM, "Transfer-Encoding": "chunked"}
    head = http_request("POST", "/v1/files", b"", chunked)
    chunk = b"x" * 4096
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in [form_head(), *[chunk] * 64])
    assert status_of_sent(gateway, head + chunks) == 413


def test_an_empty_file_is_refused(api: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        api.files.create(file=("empty.jsonl", b""), purpose="batch")
    assert "file: empty" in caught.value.message


# -- models --------------------------------------------------------------------------------


def test_models_are_read_again_only_when_the_registry_file_changes(
    genq_env: dict[str, str], tmp_path: Path
) -> None:
    models = tmp_path / "models.toml"

    def entry(name: str) -> str:
        return f'[models.{name}]\nbackend = "llama"\npath = "/nowhere/{name}.gguf"\n'

    models.write_text(entry("alpha"))
    gateway = start_gateway(genq_env, tmp_path, GENQ_MODELS_FILE=str(models))
    try:
        with sdk(gateway) as api:

            def names() -> set[str]:
                return {m.id for m in api.models.list()}

            assert "alpha" in names()
            stamp = models.stat()
            models.write_text(entry("omega"))  # in place, the same size
            os.utime(models, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
            assert "alpha" in names() and "omega" not in names()  # the file looks unchanged
            os.utime(models, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))
            assert "omega" in names() and "alpha" not in names()
            assert api.models.retrieve("omega").id == "omega"
    finally:
        gateway.stop()
