"""The remote backend against a real OpenAI-compatible server: llama-cpp-python's
(`python -m llama_cpp.server`) on loopback, serving the tiny model, with a proxy in front of
it where a test needs the server to fail."""

from __future__ import annotations

import math
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from genq import Client
from genq.common.errors import JobFailed
from genq.common.frames import (
    ContinuationFrame,
    DoneFrame,
    ErrorFrame,
    Frame,
    TokenFrame,
    WindowFrame,
)
from genq.common.registry import TINY, ModelRegistry
from genq.common.schemas import FinishReason, JobRecord, JobResult, JobState, TokenLogprob
from genq.common.settings import Settings
from genq.common.store import run, streams
from genq.common.tinymodel import TINY_EOS
from ops.llamaserver import LlamaServer
from ops.localstack import wait_for
from tests.state import job_record

from .conftest import Stack
from .proxy import FlakyProxy

REMOTE = "remote"  # the server, directly
FLAKY = "flaky"  # the same server behind the proxy
WINDOW = 16
# llama-cpp-python's server has no `ignore_eos`: jobs that must run long bias EOS away.
NO_EOS = {TINY_EOS: -100.0}
# The tiny server's context is 256 tokens: a window's request repeats at most this much output.
CONTEXT_CHARS = 24


def remote_entry(name: str, base_url: str, **options: object) -> str:
    lines = [f"[models.{name}]", 'backend = "remote"', f'base_url = "{base_url}"']
    lines += [f"window_tokens = {WINDOW}", f"context_chars = {CONTEXT_CHARS}"]
    lines += [f"{key} = {value}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


def start_server(settings: Settings, log: Path) -> LlamaServer:
    registry = ModelRegistry.from_settings(settings)
    return LlamaServer(registry.local_path(TINY), registry.llama(TINY), log).start()


def remote_stack(stack: Stack, *entries: str) -> Stack:
    registry = stack.logs / "remote-models.toml"
    registry.write_text("\n".join(entries))
    stack.env["GENQ_MODELS_FILE"] = str(registry)
    return stack


@pytest.fixture(scope="module")
def server(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    srv = start_server(settings, tmp_path_factory.mktemp("server") / "server.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def proxy(server: LlamaServer) -> Iterator[FlakyProxy]:
    flaky = FlakyProxy(server.port).start()
    yield flaky
    flaky.stop()


@pytest.fixture(scope="module")
def stack(
    genq_env: dict[str, str],
    databases: Iterator[int],
    server: LlamaServer,
    proxy: FlakyProxy,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """A relay and a worker serving the tiny model both locally (`tiny`) and remotely."""
    url = genq_env["GENQ_REDIS_URL"].rsplit("/", 1)[0] + f"/{next(databases)}"
    stack = Stack({**genq_env, "GENQ_REDIS_URL": url}, tmp_path_factory.mktemp("remote"))
    remote_stack(
        stack,
        remote_entry(REMOTE, f"http://127.0.0.1:{server.port}/v1"),
        remote_entry(FLAKY, proxy.base_url, max_retries=3, backoff_s=0.05),
    )
    stack.relay()
    stack.worker("w")
    yield stack
    stack.stop()


@pytest.fixture
def client(stack: Stack) -> Iterator[Client]:
    with Client(stack.settings) as c:
        yield c


def frames_of(client: Client, **job: object) -> tuple[list[Frame], JobResult]:
    handle = client.submit(**job)  # type: ignore[arg-type]
    frames = list(handle.stream(timeout=90))
    assert isinstance(frames[-1], DoneFrame), frames[-1]
    return frames, frames[-1].data


def tokens_of(frames: list[Frame]) -> list[TokenFrame]:
    return [f for f in frames if isinstance(f, TokenFrame)]


def test_a_remote_job_streams_in_windows_that_continue_from_the_text_so_far(
    client: Client, proxy: FlakyProxy
) -> None:
    before = len(proxy.requests)
    prompt = "Once upon a time"
    frames, result = frames_of(
        client, prompt=prompt, model=FLAKY, max_tokens=40, logit_bias=NO_EOS, seed=5
    )
    tokens = tokens_of(frames)
    windows = [f.data for f in frames if isinstance(f, WindowFrame)]
    assert result.finish_reason is FinishReason.LENGTH
    assert result.usage.completion_tokens == 40
    assert [f.data.window for f in frames if isinstance(f, ContinuationFrame)] == [0, 1, 2]
    assert [(w.window, w.tokens, w.tokens_total) for w in windows] == [
        (0, 16, 16),
        (1, 16, 32),
        (2, 8, 40),
    ]
    assert windows[-1].finish_reason is FinishReason.LENGTH
    # A remote model gives no token ids: chunks count their tokens instead.
    assert all(t.data.token_ids == [] for t in tokens)
    assert sum(t.data.count for t in tokens) == 40
    assert "".join(t.data.text for t in tokens) == result.text
    assert "".join(w.text for w in windows) == result.text
    # One request per window, each repeating the prompt and the (latest) text so far.
    requests = proxy.requests[before:]
    assert [path for path, _ in requests] == ["/v1/completions"] * 3
    so_far = ""
    for (_, body), window in zip(requests, windows, strict=True):
        assert body["prompt"] == prompt + so_far[len(so_far) - CONTEXT_CHARS :]
        assert body["max_tokens"] == window.tokens
        assert body["stream"] is True
        so_far += window.text


def test_a_remote_chat_job_continues_its_later_windows_as_the_assistant(
    client: Client, proxy: FlakyProxy
) -> None:
    before = len(proxy.requests)
    messages = [{"role": "user", "content": "Tell me a story."}]
    frames, result = frames_of(
        client, messages=messages, model=FLAKY, max_tokens=24, logit_bias=NO_EOS, seed=2
    )
    windows = [f.data for f in frames if isinstance(f, WindowFrame)]
    assert result.usage.completion_tokens == 24
    assert "".join(t.data.text for t in tokens_of(frames)) == result.text
    requests = proxy.requests[before:]
    assert [path for path, _ in requests] == ["/v1/chat/completions"] * 2
    assert requests[0][1]["messages"] == messages
    continued = requests[1][1]["messages"]
    if windows[0].text:  # the assistant's text so far, for the server to continue
        assert continued == [*messages, {"role": "assistant", "content": windows[0].text}]
    else:
        assert continued == messages


@pytest.mark.parametrize("model", [TINY, REMOTE])
def test_a_stop_sequence_across_a_chunk_boundary_ends_the_text_on_every_backend(
    client: Client, model: str
) -> None:
    job = {"prompt": "Once", "model": model, "max_tokens": 64, "logit_bias": NO_EOS, "seed": 11}
    frames, full = frames_of(client, **job)
    texts = [t.data.text for t in tokens_of(frames)]
    stops = [
        a[-1] + b[0]
        for a, b, done in zip(texts, texts[1:], _prefix_lengths(texts), strict=False)
        if a and b and full.text.find(a[-1] + b[0]) == done - 1
    ]
    assert stops, f"no chunk boundary to put a stop sequence across in {texts!r}"
    stop = stops[0]
    _, stopped = frames_of(client, **job, stop=[stop])
    assert stopped.finish_reason is FinishReason.STOP
    assert stopped.text == full.text[: full.text.index(stop)]


def _prefix_lengths(texts: list[str]) -> list[int]:
    """Characters before each chunk boundary (after chunk i)."""
    total, out = 0, []
    for text in texts:
        total += len(text)
        out.append(total)
    return out


def test_a_cancelled_remote_job_stops_and_keeps_its_streamed_text(client: Client) -> None:
    handle = client.submit(prompt="Once", model=REMOTE, max_tokens=100_000, logit_bias=NO_EOS)
    stream = handle.stream(timeout=90)
    seen = []
    for frame in stream:
        seen.append(frame)
        if isinstance(frame, TokenFrame) and len(tokens_of(seen)) == 3:
            handle.cancel()
    result = stream.result
    assert result.finish_reason is FinishReason.CANCELLED
    assert result.text == "".join(t.data.text for t in tokens_of(seen))
    assert 0 < result.usage.completion_tokens < 100_000


def test_a_server_error_is_retried_and_the_job_succeeds(
    client: Client, proxy: FlakyProxy, stack: Stack
) -> None:
    failed = proxy.failed
    proxy.fail(2)
    result = client.submit(prompt="Once", model=FLAKY, max_tokens=8, logit_bias=NO_EOS).result(
        timeout=60
    )
    assert result.usage.completion_tokens == 8
    assert proxy.failed == failed + 2
    log = (stack.logs / "w.log").read_text()
    assert "HTTP 500" in log
    assert "retry 2 of 3" in log


def test_a_server_failing_past_the_retries_fails_the_job_with_a_clear_error(
    client: Client, proxy: FlakyProxy
) -> None:
    proxy.fail(10)
    try:
        handle = client.submit(prompt="Once", model=FLAKY, max_tokens=8)
        with pytest.raises(JobFailed) as failed:
            handle.result(timeout=60)
    finally:
        proxy.fail(0)
    assert failed.value.error_code == "remote_unavailable"
    assert failed.value.retryable
    assert "failed 4 times, the last with HTTP 500" in failed.value.error_message
    assert f"model {FLAKY!r}" in failed.value.error_message


def test_logprobs_are_well_formed_and_the_same_in_the_stream_and_the_result(
    client: Client,
) -> None:
    first: dict[str, TokenLogprob] = {}
    for model, top in ((TINY, 3), (REMOTE, 2)):
        frames, result = frames_of(
            client,
            prompt="Once upon",
            model=model,
            max_tokens=20,
            temperature=0.0,
            logit_bias=NO_EOS,
            logprobs=top,
        )
        streamed = [lp for t in tokens_of(frames) for lp in t.data.logprobs or []]
        assert all(len(t.data.logprobs or []) == t.data.count for t in tokens_of(frames))
        assert streamed == result.logprobs
        assert len(streamed) == result.usage.completion_tokens == 20
        for lp in streamed:
            if lp.logprob is None:  # a token the server sent without one (text it held back)
                assert model == REMOTE and lp.top == []
                continue
            assert lp.logprob <= 0 and math.isfinite(lp.logprob)
            # /v1/completions keys alternatives by text: two tokens of the same text are one.
            assert len(lp.top) == top if model == TINY else 1 <= len(lp.top) <= top
            values = [alt.logprob for alt in lp.top]
            assert values == sorted(values, reverse=True)
            # Greedy: the chosen token is the most likely one.
            assert lp.logprob == pytest.approx(values[0], abs=1e-4)
        first[model] = streamed[0]
    # The same model behind the server gives the same first token's log probability (its
    # text may differ: the server drops bytes that are not UTF-8 where genq writes U+FFFD).
    assert first[REMOTE].logprob == pytest.approx(first[TINY].logprob, abs=1e-3)


def test_a_remote_server_killed_mid_job_fails_it_with_a_clear_error(
    make_stack: Callable[[], Stack], settings: Settings, tmp_path: Path
) -> None:
    server = start_server(settings, tmp_path / "mortal.log")
    try:
        base_url = f"http://127.0.0.1:{server.port}/v1"
        stack = remote_stack(
            make_stack(), remote_entry("mortal", base_url, max_retries=2, backoff_s=0.05)
        )
        stack.relay()
        stack.worker("w")
        with Client(stack.settings) as client:
            handle = client.submit(
                prompt="Once", model="mortal", max_tokens=100_000, logit_bias=NO_EOS
            )
            stream = handle.stream(timeout=60)
            frames = []
            for frame in stream:
                frames.append(frame)
                if isinstance(frame, TokenFrame) and server.proc is not None:
                    server.proc.send_signal(signal.SIGKILL)
                    server.proc.wait()
                    server.proc = None
            state = record(client, handle.job_id).state
        assert state is JobState.FAILED
        assert isinstance(frames[-1], ErrorFrame)
        error = frames[-1].data
        assert error.code == "remote_unavailable"
        assert error.retryable
        assert "model 'mortal'" in error.message and base_url in error.message
        assert "broke off after" in error.message or "failed 3 times" in error.message
    finally:
        server.stop()


def test_a_remote_job_resumes_on_another_worker_from_its_committed_text(
    make_stack: Callable[[], Stack], server: LlamaServer
) -> None:
    stack = remote_stack(make_stack(), remote_entry(REMOTE, f"http://127.0.0.1:{server.port}/v1"))
    stack.relay()
    stack.worker("a")
    stack.worker("b")
    with Client(stack.settings) as client:
        handle = client.submit(
            prompt="Once", model=REMOTE, max_tokens=3000, logit_bias=NO_EOS, logprobs=1
        )
        checkpointed = streams.checkpointed(client.keys, handle.job_id)
        wait_for(lambda: run(client.redis, checkpointed) >= 2, 60, "two remote windows")
        stack.holder(client, handle.job_id).signal(signal.SIGKILL)
        result = handle.result(timeout=120)
        status = record(client, handle.job_id)
        committed = run(client.redis, streams.entries(client.keys, handle.job_id))
    assert status.epoch >= 1
    assert result.usage.completion_tokens == 3000
    assert result.finish_reason is FinishReason.LENGTH
    assert len(committed) == math.ceil(3000 / WINDOW)
    assert result.text.startswith("".join(entry.text for entry in committed[:2]))
    # The result's log probabilities span both attempts: the lost one's from its windows.
    assert result.logprobs is not None and len(result.logprobs) == 3000


def record(client: Client, job_id: str) -> JobRecord:
    return job_record(client.redis, client.keys, job_id)
