"""genq.common.frames: protocol v1, one JSON frame per message on a job's channel."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from genq.common.frames import (
    FRAME_CLASSES,
    HEADER_FIELDS,
    ContinuationData,
    ContinuationFrame,
    DoneFrame,
    ErrorData,
    ErrorFrame,
    FrameType,
    ResumeData,
    ResumeFrame,
    TokenData,
    TokenFrame,
    WindowData,
    WindowFrame,
    checkpoint_only,
    parse_frame,
)
from genq.common.schemas import JobResult, TokenLogprob, TopLogprob

JOB = "0123456789abcdef" * 2
HEAD: dict[str, Any] = {"job_id": JOB, "epoch": 1, "seq": 7, "ts_ms": 1_700_000_000_123}

AnyFrame = TokenFrame | ContinuationFrame | WindowFrame | ResumeFrame | DoneFrame | ErrorFrame


def every_frame(result: JobResult) -> list[AnyFrame]:
    return [
        TokenFrame(
            **HEAD,
            data=TokenData(
                text="héllo 😀",
                token_ids=[5, 6],
                logprobs=[
                    TokenLogprob(token="hé", logprob=-0.5, top=[TopLogprob(token="a", logprob=-1)]),
                    TokenLogprob(token="llo 😀", logprob=-1.25),
                ],
            ),
        ),
        TokenFrame(**HEAD, data=TokenData(text="remote", token_ids=[], tokens=3)),
        TokenFrame(**HEAD, data=TokenData(text="", token_ids=[9])),
        ContinuationFrame(**HEAD, data=ContinuationData(window=2)),
        WindowFrame(
            **HEAD, data=WindowData(window=1, token_ids=[1, 2, 3], text="abc", tokens_total=40)
        ),
        ResumeFrame(
            **HEAD, data=ResumeData(from_window=1, committed_tokens=40, committed_chars=120)
        ),
        DoneFrame(**HEAD, data=result),
        ErrorFrame(**HEAD, data=ErrorData(code="model_load_failed", message="no", retryable=False)),
    ]


def test_every_frame_type_round_trips_through_json(
    make_result: Callable[..., JobResult],
) -> None:
    frames = every_frame(make_result())
    assert {frame.type for frame in frames} == set(FrameType)
    for frame in frames:
        raw = frame.model_dump_json()
        assert parse_frame(raw) == frame
        assert parse_frame(raw.encode()) == frame


def test_frame_carries_version_and_type_on_the_wire() -> None:
    raw = json.loads(TokenFrame(**HEAD, data=TokenData(text="a", token_ids=[1])).model_dump_json())
    assert raw["v"] == 1
    assert raw["type"] == "token"


def test_timestamp_defaults_to_the_wall_clock_in_ms() -> None:
    before = time.time_ns() // 1_000_000
    frame = ContinuationFrame(job_id=JOB, epoch=0, seq=0, data=ContinuationData(window=0))
    assert before <= frame.ts_ms <= time.time_ns() // 1_000_000


def token_json(**changes: Any) -> str:
    frame: dict[str, Any] = {
        "v": 1,
        "type": "token",
        **HEAD,
        "data": {"text": "a", "token_ids": [1]},
    }
    for key, value in changes.items():
        if value is None:
            del frame[key]
        else:
            frame[key] = value
    return json.dumps(frame)


def test_token_json_fixture_is_a_valid_frame() -> None:
    assert isinstance(parse_frame(token_json()), TokenFrame)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"type": "tokens"}, "does not match any of the expected tags"),
        ({"type": None}, "Unable to extract tag"),
        ({"v": 2}, "Input should be 1"),
        ({"job_id": None}, "Field required"),
        ({"epoch": None}, "Field required"),
        ({"seq": None}, "Field required"),
        ({"data": None}, "Field required"),
        ({"data": {"text": "a"}}, "Field required"),
        ({"seq": -1}, "greater than or equal to 0"),
        ({"extra": 1}, "Extra inputs are not permitted"),
        ({"data": {"code": "x", "message": "y", "retryable": False}}, "Field required"),
    ],
    ids=[
        "unknown-type",
        "no-type",
        "version-2",
        "no-job-id",
        "no-epoch",
        "no-seq",
        "no-data",
        "data-missing-field",
        "negative-seq",
        "unknown-field",
        "data-of-another-type",
    ],
)
def test_parse_frame_rejects_malformed_frames(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_frame(token_json(**changes))


def test_parse_frame_rejects_text_that_is_not_json() -> None:
    with pytest.raises(ValidationError, match="Invalid JSON"):
        parse_frame("token: hello")


def test_every_frame_is_written_with_the_header_fields_first_in_order(
    make_result: Callable[..., JobResult],
) -> None:
    # The relay's fast path (workers/relay/shape.py) reads token frames in this order.
    for frame in every_frame(make_result()):
        assert tuple(json.loads(frame.model_dump_json()))[:-1] == HEADER_FIELDS
    assert {cls.model_fields["type"].default for cls in FRAME_CLASSES} == set(FrameType)


def test_a_window_sent_again_for_the_checkpoint_has_seq_zero() -> None:
    data = WindowData(window=3, token_ids=[1], text="a", tokens_total=40)
    assert checkpoint_only(WindowFrame(**{**HEAD, "seq": 0}, data=data))
    assert not checkpoint_only(WindowFrame(**HEAD, data=data))
    token = TokenFrame(**{**HEAD, "seq": 0}, data=TokenData(text="a", token_ids=[1]))
    assert not checkpoint_only(token)
