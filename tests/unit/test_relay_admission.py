"""genq.workers.relay.admission: what the relay refuses to move, and why (no Redis needed: a
refused message never reaches the job lookup)."""

from __future__ import annotations

import json
import logging

import pytest
import redis

from genq.common.frames import TokenData, TokenFrame, WindowData, WindowFrame
from genq.common.schemas import FinishReason, TokenLogprob
from genq.common.store import streams
from genq.common.store.keys import Keys
from genq.workers.relay.admission import Admission
from genq.workers.relay.metrics import Drop, RelayStats
from ops.localstack import free_port

JOB = "ab" * 16
SECRET = "the prompt's secret words"


def admission() -> tuple[Admission, RelayStats]:
    stats = RelayStats()
    unreachable = redis.Redis(port=free_port(), socket_connect_timeout=0.5)
    return Admission(unreachable, Keys(), stats), stats


def token(**changes: object) -> bytes:
    frame = TokenFrame(job_id=JOB, epoch=0, seq=3, data=TokenData(text=SECRET, token_ids=[1]))
    return json.dumps({**json.loads(frame.model_dump_json()), **changes}).encode()


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"\xff\xfe not even UTF-8", Drop.JSON),
        (token()[:-5], Drop.JSON),
        (b"[" * 100_000 + b"]" * 100_000, Drop.JSON),
        (b'{"v":1}', Drop.SCHEMA),
        (token(data={"text": 5, "token_ids": "x"}), Drop.SCHEMA),
        (token(type="window"), Drop.SCHEMA),
        (token(seq=2**63), Drop.SCHEMA),  # no stream id part
        (token(extra=1), Drop.SCHEMA),
        (token(seq=0), Drop.SEQ),  # only a window may be sent for the checkpoint only
    ],
)
def test_a_message_that_is_not_a_valid_frame_is_dropped_with_its_reason(
    message: bytes, reason: Drop
) -> None:
    admit, stats = admission()
    assert admit.admit([message]) == []
    assert stats.dropped == {reason: 1}


def test_a_dropped_message_is_logged_once_per_job_and_reason_without_its_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    admit, stats = admission()
    bad = token(data={"text": SECRET, "token_ids": "x"})
    with caplog.at_level(logging.INFO, logger="genq.relay"):
        admit.admit([bad, bad, token(seq=0), bad])
    assert stats.dropped == {Drop.SCHEMA: 3, Drop.SEQ: 1}
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2
    assert all(JOB in line for line in lines)
    assert all(SECRET not in line for line in lines)


def test_a_checkpoint_entry_holds_what_a_resume_reads() -> None:
    logprob = TokenLogprob(token="a", logprob=-0.5)
    data = WindowData(
        window=2,
        token_ids=[],
        tokens=4,
        text="abcd",
        tokens_total=12,
        logprobs=[logprob],
        finish_reason=FinishReason.STOP,
    )
    frame = WindowFrame(job_id=JOB, epoch=1, seq=9, data=data)
    entry = json.loads(streams.encode_entry(streams.entry_of(frame.data)))
    assert entry == {
        "v": 1,
        "token_ids": [],
        "text": "abcd",
        "finish_reason": "stop",
        "tokens": 4,
        "logprobs": [json.loads(logprob.model_dump_json())],
    }
