"""The gateway's SSE rendering (producer/gateway/chunks.py): after a resume, regenerated text
already sent is not sent again; a regeneration that differs ends the stream with an error."""

from __future__ import annotations

from typing import Any

import pytest

from genq.common.frames import DoneFrame, Frame, ResumeData, ResumeFrame, TokenData, TokenFrame
from genq.common.schemas import FinishReason, JobResult, Timings, Usage
from genq.common.store.gateway import StreamMeta
from genq.producer.core import StreamState
from genq.producer.gateway.chunks import DIVERGED, DONE, Renderer
from genq.producer.gateway.streams import parse_event_id

JOB = "0" * 32
META = StreamMeta("chat", "tiny", 1, include_usage=True)


def token(epoch: int, seq: int, text: str) -> TokenFrame:
    return TokenFrame(job_id=JOB, epoch=epoch, seq=seq, data=TokenData(text=text, token_ids=[1]))


def resume(seq: int, chars: int) -> ResumeFrame:
    data = ResumeData(from_window=1, committed_tokens=1, committed_chars=chars)
    return ResumeFrame(job_id=JOB, epoch=1, seq=seq, data=data)


def done(epoch: int, seq: int, text: str) -> DoneFrame:
    timings = Timings(queue_wait_ms=0, first_token_ms=0, generation_ms=0, tokens_per_s=0)
    result = JobResult(
        job_id=JOB,
        model="tiny",
        text=text,
        finish_reason=FinishReason.LENGTH,
        usage=Usage(prompt_tokens=2, completion_tokens=3),
        timings=timings,
    )
    return DoneFrame(job_id=JOB, epoch=epoch, seq=seq, data=result)


def rendered(frames: list[Frame]) -> list[Any]:
    state, renderer, out = StreamState(JOB), Renderer(JOB, META), []
    for frame in frames:
        state.apply(frame)
        out.extend(renderer.render(frame, state))
        if renderer.ended:
            break
    return out


def texts(payloads: list[Any]) -> str:
    return "".join(
        p["choices"][0]["delta"].get("content", "")
        for p in payloads
        if isinstance(p, dict) and p.get("choices")
    )


def test_a_resumed_job_sends_its_regenerated_text_once() -> None:
    frames: list[Frame] = [
        token(0, 1, "ab"),
        token(0, 2, "cd"),
        resume(1, 2),
        token(1, 2, "cd"),
        token(1, 3, "ef"),
        done(1, 4, "abcdef"),
    ]
    payloads = rendered(frames)
    assert texts(payloads) == "abcdef"
    assert payloads[0]["choices"][0]["delta"]["role"] == "assistant"
    assert payloads[-3]["choices"][0]["finish_reason"] == "length"
    assert payloads[-2]["usage"]["total_tokens"] == 5 and payloads[-2]["choices"] == []
    assert payloads[-1] == DONE


def test_a_resumed_job_whose_text_differs_ends_with_an_error() -> None:
    frames: list[Frame] = [token(0, 1, "ab"), token(0, 2, "cd"), resume(1, 2), token(1, 2, "xy")]
    payloads = rendered(frames)
    assert texts(payloads) == "abcd"
    assert payloads[-1]["error"]["code"] == DIVERGED
    assert "final result" in payloads[-1]["error"]["message"]


def test_event_ids_are_epoch_and_seq() -> None:
    assert parse_event_id("3-17") == (3, 17)
    for bad in ("", "3", "a-1", "1-", "-1-2"):
        with pytest.raises(ValueError, match="EPOCH-SEQ"):
            parse_event_id(bad)
