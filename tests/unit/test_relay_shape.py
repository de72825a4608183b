"""genq.workers.relay.shape: the relay's fast path accepts only valid token frames, with the header
pydantic reads, and catches the frames workers write (else the relay is slow, not wrong)."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from genq.common.frames import TokenData, TokenFrame, parse_frame
from genq.workers.relay.shape import canonical_token, canonical_tokens

JOB = "ab" * 16
texts = st.text(max_size=40)
ids = st.lists(st.integers(min_value=0, max_value=10**18 - 1), max_size=20)


def header(raw: bytes) -> tuple[str, int, int, int] | None:
    """What the fast path reads of `raw`: job id, epoch, seq, ts_ms."""
    match = canonical_token(raw)
    if match is None:
        return None
    job, *numbers = match.groups()
    return (job.decode(), *map(int, numbers))  # type: ignore[return-value]


def frame(text: str = 'é\n"x', token_ids: list[int] | None = None, **header: int) -> bytes:
    data = TokenData(text=text, token_ids=[7, 0, 120] if token_ids is None else token_ids)
    fields = {"epoch": 2, "seq": 9, "ts_ms": 123, **header}
    return TokenFrame(job_id=JOB, data=data, **fields).model_dump_json().encode()


@given(texts, ids, st.integers(0, 10**18 - 1), st.integers(1, 10**18 - 1))
def test_a_token_frame_as_a_worker_writes_it_takes_the_fast_path(
    text: str, token_ids: list[int], epoch: int, seq: int
) -> None:
    assert header(frame(text, token_ids, epoch=epoch, seq=seq)) == (JOB, epoch, seq, 123)


def test_frames_the_fast_path_leaves_to_pydantic() -> None:
    spaced = json.dumps(json.loads(frame())).encode()  # valid, spelled otherwise
    assert canonical_token(spaced) is None
    assert canonical_token(frame(seq=0)) is None  # dropped by the full check, with its reason
    assert canonical_token(frame().replace(b'"tokens":null', b'"tokens":01')) is None
    assert canonical_token(frame().replace(b"\xc3\xa9", b"\xc3")) is None  # not UTF-8
    assert canonical_token(frame().replace(b"x", b"\\ud800")) is None  # a lone surrogate


@given(st.binary(max_size=40), st.sampled_from([frame(), frame("", [])]), st.integers(0, 300))
def test_whatever_the_fast_path_accepts_pydantic_accepts_alike(
    junk: bytes, valid: bytes, at: int
) -> None:
    for raw in (valid[:at] + junk + valid[at:], valid[:at] + junk + valid[at + len(junk) :]):
        fast = header(raw)
        if fast is not None:
            parsed = parse_frame(raw)
            assert isinstance(parsed, TokenFrame)
            assert (parsed.job_id, parsed.epoch, parsed.seq, parsed.ts_ms) == fast


def groups(match: re.Match[bytes] | None) -> tuple[bytes | Any, ...] | None:
    return None if match is None else match.groups()


NOT_UTF8 = frame().replace(b"\xc3\xa9", b"\xc3")
MIXED = [frame(), frame("", []), frame(seq=0), NOT_UTF8, b"", b"{}", frame()[:-1]]


@given(st.lists(st.sampled_from(MIXED)))
def test_a_batch_is_recognized_as_its_frames_one_by_one(batch: list[bytes]) -> None:
    batched = [groups(match) for match in canonical_tokens(batch)]
    assert batched == [groups(canonical_token(raw)) for raw in batch]
