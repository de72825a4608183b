"""A worker streams a real model's tokens over pub/sub; what a subscriber reads is the result."""

from __future__ import annotations

import asyncio
from typing import Any

from genq import AsyncClient, Client, FinishReason, JobHandle, Settings
from genq.common.frames import DoneFrame, TokenFrame

EOS = 2  # the tiny model's </s>
LONG = 230  # tokens: most of the tiny model's 256-token context


def collect(job: JobHandle) -> tuple[list[TokenFrame], DoneFrame]:
    frames = list(job.stream(timeout=60))
    tokens = [f for f in frames if isinstance(f, TokenFrame)]
    done = frames[-1]
    assert isinstance(done, DoneFrame), f"stream ended with {done!r}"
    return tokens, done


def splits_a_character(pieces: list[bytes]) -> bool:
    """True if some valid multi-byte UTF-8 character has a token boundary inside it."""
    data = b"".join(pieces)
    bounds, offset = set(), 0
    for piece in pieces:
        offset += len(piece)
        bounds.add(offset)
    pos = 0
    while pos < len(data):
        lead = data[pos]
        size = (
            2
            if 0xC2 <= lead <= 0xDF
            else 3
            if 0xE0 <= lead <= 0xEF
            else 4
            if 0xF0 <= lead <= 0xF4
            else 1
        )
        chunk = data[pos : pos + size]
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError:
            pos += 1
            continue
        if size > 1 and any(pos < b < pos + size for b in bounds):
            return True
        pos += size
    return False


def test_streamed_chunks_concatenate_to_the_result_text_across_split_utf8(
    client: Client, tiny_vocab: Any
) -> None:
    split_seen = False
    for seed in range(1, 6):
        job = client.submit("Bonjour ü 日本", max_tokens=LONG, seed=seed, ignore_eos=True)
        tokens, done = collect(job)
        result = done.data
        ids = [t for frame in tokens for t in frame.data.token_ids]
        pieces = [tiny_vocab.detokenize([t]) for t in ids]
        assert "".join(f.data.text for f in tokens) == result.text == job.text
        # All-at-once decoding of the same tokens gives the same text: nothing split or lost.
        assert result.text == b"".join(pieces).decode("utf-8", "replace")
        result.text.encode("utf-8")  # valid UTF-8: no lone surrogates
        assert len(ids) == result.usage.completion_tokens == LONG
        assert len(tokens[0].data.token_ids) == 1, "the first token goes out on its own"
        assert len(tokens) > 2, "later tokens arrive in several chunks"
        split_seen = split_seen or splits_a_character(pieces)
    assert split_seen, "no job split a multi-byte character across tokens"


def test_frames_carry_the_v1_envelope_with_increasing_seq(client: Client) -> None:
    job = client.submit("seq", max_tokens=40, seed=3, ignore_eos=True)
    frames = list(job.stream(timeout=60))
    assert [f.seq for f in frames] == list(range(1, len(frames) + 1))
    assert {(f.v, f.job_id, f.epoch) for f in frames} == {(1, job.job_id, 0)}
    assert all(f.ts_ms > 0 for f in frames)


def test_same_seed_gives_same_text_and_different_seed_different_text(client: Client) -> None:
    def text(seed: int) -> str:
        return client.submit("Once", max_tokens=60, seed=seed, ignore_eos=True).result(60).text

    first, again, other = text(11), text(11), text(12)
    assert first == again
    assert first != other


def test_job_without_seed_gets_one_and_different_jobs_differ(client: Client) -> None:
    texts = {
        client.submit("Once", max_tokens=40, ignore_eos=True).result(60).text for _ in range(3)
    }
    assert len(texts) == 3


def test_max_tokens_ends_with_finish_reason_length(client: Client) -> None:
    result = client.submit("len", max_tokens=17, seed=5, ignore_eos=True).result(60)
    assert result.finish_reason == FinishReason.LENGTH
    assert result.usage.completion_tokens == 17


def test_end_of_sequence_ends_with_finish_reason_stop(client: Client) -> None:
    result = client.submit("eos", max_tokens=50, seed=5, logit_bias={EOS: 100.0}).result(60)
    assert result.finish_reason == FinishReason.STOP
    assert (result.text, result.usage.completion_tokens) == ("", 0)


def test_stop_sequence_ends_the_text_before_it(client: Client) -> None:
    full = client.submit("stop", max_tokens=120, seed=21, ignore_eos=True).result(60).text
    stop = full[60:63]
    cut = full.find(stop)
    job = client.submit("stop", max_tokens=120, seed=21, ignore_eos=True, stop=[stop, "never-seen"])
    tokens, done = collect(job)
    assert done.data.finish_reason == FinishReason.STOP
    assert done.data.text == full[:cut]
    assert stop not in "".join(f.data.text for f in tokens)


def test_chat_messages_are_rendered_with_the_models_template(
    client: Client, tiny_vocab: Any
) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hi"}]
    result = client.submit(messages=messages, max_tokens=8, seed=1, ignore_eos=True).result(60)
    rendered = "<|system|>\nbe brief\n<|user|>\nHi\n<|assistant|>\n"  # the tiny model's template
    expected = tiny_vocab.tokenize(rendered.encode(), add_bos=False, special=True)
    assert result.usage.prompt_tokens == len(expected)
    assert result.usage.completion_tokens == 8


def test_plain_prompt_gets_bos_and_its_tokens(client: Client, tiny_vocab: Any) -> None:
    result = client.submit("Hi there", max_tokens=4, seed=1, ignore_eos=True).result(60)
    assert result.usage.prompt_tokens == len(tiny_vocab.tokenize(b"Hi there", add_bos=True))


def test_result_reports_timings_and_subscriber_stats(client: Client) -> None:
    job = client.submit("timing", max_tokens=50, seed=2, ignore_eos=True)
    result = job.result(60)
    assert result.timings.first_token_ms >= result.timings.queue_wait_ms >= 0
    assert result.timings.tokens_per_s > 0
    stats = job.stats
    assert stats.tokens == 50
    assert stats.first_token_s is not None and 0 < stats.first_token_s <= stats.elapsed_s
    # The subscriber's clock starts when submit() starts: it receives the first token after
    # the worker stamped it, so it cannot report less (2 ms: both wall stamps are truncated).
    assert stats.first_token_s * 1000 >= result.timings.first_token_ms - 2


def test_async_client_streams_the_same_text_as_the_sync_client(
    client: Client, settings: Settings
) -> None:
    sync_text = client.submit("async", max_tokens=40, seed=8, ignore_eos=True).result(60).text

    async def main() -> tuple[str, str]:
        async with AsyncClient(settings) as aclient:
            job = await aclient.submit("async", max_tokens=40, seed=8, ignore_eos=True)
            streamed = [
                f.data.text async for f in job.stream(timeout=60) if isinstance(f, TokenFrame)
            ]
            return "".join(streamed), (await job.result(60)).text

    streamed, result_text = asyncio.run(main())
    assert streamed == result_text == sync_text


def test_async_client_runs_parallel_streams(settings: Settings, client: Client) -> None:
    async def main() -> list[int]:
        async with AsyncClient(settings) as aclient:
            jobs = [
                await aclient.submit("p", max_tokens=n, seed=n, ignore_eos=True) for n in (5, 9, 13)
            ]
            results = await asyncio.gather(*(job.result(60) for job in jobs))
            return [r.usage.completion_tokens for r in results]

    assert asyncio.run(main()) == [5, 9, 13]
