"""genq on a real model, gemma-3-270m: chat, determinism, facts, UTF-8, stops, context limits
and a worker killed mid-job. Jobs are tens of tokens (the model does about 36 tokens/s on two
cores, less on a busy machine)."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from genq import Client
from genq.common import gemma
from genq.common.errors import PromptTooLong
from genq.common.frames import TokenFrame
from genq.common.schemas import FinishReason, JobState
from ops.localstack import Worker
from tests.integration.conftest import Stack
from tests.integration.test_failover import assert_resumed_cleanly, at_window, follow, record

GEMMA = gemma.NAME
GREEDY: dict[str, Any] = {"model": GEMMA, "temperature": 0.0}


def streamed(client: Client, **job: Any) -> tuple[str, Any]:
    """(the token chunks' text joined, the result) of a job, read from its stream."""
    handle = client.submit(**job)
    chunks: list[str] = []
    with handle.stream(timeout=90) as stream:
        for frame in stream:
            if isinstance(frame, TokenFrame):
                chunks.append(frame.data.text)
        return "".join(chunks), stream.result


def test_a_chat_question_is_answered_and_the_turn_ends_before_the_next_role_line(
    client: Client, gemma_worker: Worker
) -> None:
    question = [{"role": "user", "content": "What is the capital of France?"}]
    text, result = streamed(client, messages=question, max_tokens=32, **GREEDY)
    assert "Paris" in text
    assert result.finish_reason == FinishReason.STOP  # the model began `Question:` again
    assert "Question" not in text and "Answer" not in text
    assert result.text == text
    assert "model has no chat template" in gemma_worker.log.read_text()


def test_the_same_seed_gives_the_same_text(client: Client) -> None:
    job: dict[str, Any] = {"model": GEMMA, "prompt": "Once upon a time", "max_tokens": 16}
    job["seed"] = 11
    first = client.submit(**job, temperature=0.9).result(timeout=90).text
    again = client.submit(**job, temperature=0.9).result(timeout=90).text
    assert first == again
    assert len(first) > 16  # real words, not a token or two


def test_a_greedy_continuation_knows_a_fact(client: Client) -> None:
    prompt = "The Eiffel Tower is located in the city of"
    result = client.submit(prompt=prompt, max_tokens=6, **GREEDY).result(timeout=90)
    assert "Paris" in result.text


def test_japanese_and_emoji_stream_as_whole_characters(client: Client) -> None:
    prompt = "東京タワー🗼は日本の"
    text, result = streamed(client, prompt=prompt, max_tokens=24, **GREEDY)
    assert text == result.text
    assert "\ufffd" not in text  # no character split between chunks or lost
    assert any(ord(char) > 0x3000 for char in text)  # it answered in Japanese
    assert result.usage.prompt_tokens < len(prompt.encode())  # a real tokenizer's pieces


def test_a_stop_sequence_ends_the_text_before_it(client: Client) -> None:
    prompt = "Monday, Tuesday, Wednesday,"
    text, result = streamed(client, prompt=prompt, max_tokens=16, stop=[" Friday"], **GREEDY)
    assert result.text == text == " Thursday,"
    assert result.finish_reason == FinishReason.STOP


def test_a_prompt_too_long_for_the_context_is_refused_before_queueing(client: Client) -> None:
    jobs = set(client.redis.keys("*:job"))
    with pytest.raises(PromptTooLong) as caught:
        client.submit(prompt="many words " * 1200, model=GEMMA, max_tokens=4)
    tokens = int(str(caught.value).split()[2])  # "prompt is N tokens; ..."
    assert tokens > gemma.N_CTX
    assert str(caught.value) == (
        f"prompt is {tokens} tokens; model 'gemma-3-270m' has a context of 2048 tokens"
    )
    assert set(client.redis.keys("*:job")) == jobs


def test_a_job_resumes_after_sigkill_to_the_text_of_an_uninterrupted_run(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()  # the stack's lease is 2 s (genq_env): a quick resume
    stack.relay()
    stack.worker("a", "--models", GEMMA), stack.worker("b", "--models", GEMMA)
    job: dict[str, Any] = {"prompt": "Once upon a time", "max_tokens": 40, "seed": 3}
    job |= {"model": GEMMA, "window_tokens": 10, "ignore_eos": True}
    with Client(stack.settings) as client:
        expected = client.submit(**job).result(timeout=90).text
        handle = client.submit(**job)
        kill = at_window(2, 0, lambda: stack.holder(client, handle.job_id).signal(signal.SIGKILL))
        text, result = follow(client, handle.job_id, kill)
        assert result.text == text == expected
        assert_resumed_cleanly(client, handle.job_id, epochs=2)
        done = record(client, handle.job_id)
        assert (done.state, done.epoch, done.attempts) == (JobState.SUCCEEDED, 1, 2)


def test_processes_assembling_the_model_at_once_leave_one_good_file(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assemble = (
        "import sys; from pathlib import Path; from genq.common.gemma import ensure_gemma_model"
    )
    assemble += "; print(ensure_gemma_model(Path(sys.argv[1])))"
    procs = [
        subprocess.Popen([sys.executable, "-c", assemble, str(cache)], stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    paths = {proc.communicate(timeout=90)[0].decode().strip() for proc in procs}
    assert [proc.returncode for proc in procs] == [0, 0]
    assert paths == {str(gemma.gemma_path(cache))}
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) == [
        gemma.gemma_path(cache).name  # no temporary file left behind
    ]
    digest = hashlib.sha256(gemma.gemma_path(cache).read_bytes()).hexdigest()
    assert digest == gemma.expected_sha256()
