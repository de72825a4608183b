"""Realistic token frames for the relay benchmark, made fast.

Each job's frame is built once by pydantic (`TokenFrame(...).model_dump_json()`: a chunk of 16
tokens, as a worker flushes with the default GENQ_CHUNK_TOKENS) and split around its `seq` and
`ts_ms` fields; a frame for any seq is then three byte joins, and byte-identical to what
pydantic writes for it (`FrameTemplate.check` proves it for a sample).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from genq.common.frames import TokenData, TokenFrame
from genq.common.store import streams
from genq.common.store.keys import Keys

CHUNK_TEXT = "▁the quick brown fox über naïve café 日本語 jumps over"
CHUNK_TOKENS = 16
_SEQ_MARK = 987_654_321_987  # stands for seq and ts_ms while the template is cut
_TS_MARK = 123_456_789_123


def job_ids(tag: str, count: int) -> list[str]:
    """`count` job ids, the same for the same tag in every process (32 hex digits)."""
    return [
        hashlib.blake2b(f"{tag}:{n}".encode(), digest_size=16).hexdigest() for n in range(count)
    ]


def sample_frame(job_id: str, seq: int, ts_ms: int) -> bytes:
    data = TokenData(text=CHUNK_TEXT, token_ids=list(range(300, 300 + CHUNK_TOKENS)))
    frame = TokenFrame(job_id=job_id, epoch=0, seq=seq, ts_ms=ts_ms, data=data)
    return frame.model_dump_json().encode()


@dataclass(frozen=True)
class FrameTemplate:
    """One job's token frames: `frame(seq, ts)` is `sample_frame(job_id, seq, ts)`."""

    job_id: str
    channel: bytes
    stream: bytes
    head: bytes  # up to the seq digits
    middle: bytes  # between seq and ts_ms digits
    tail: bytes  # after the ts_ms digits

    @classmethod
    def build(cls, keys: Keys, job_id: str) -> FrameTemplate:
        whole = sample_frame(job_id, _SEQ_MARK, _TS_MARK)
        head, rest = whole.split(b"%d" % _SEQ_MARK)
        middle, tail = rest.split(b"%d" % _TS_MARK)
        channel, stream = (
            streams.channel(keys, job_id).encode(),
            streams.stream_key(keys, job_id).encode(),
        )
        return cls(job_id, channel, stream, head, middle, tail)

    def frame(self, seq: int, ts: bytes) -> bytes:
        return b"%s%d%s%s%s" % (self.head, seq, self.middle, ts, self.tail)

    def check(self) -> None:
        """The template writes exactly what pydantic writes (a guard for protocol changes)."""
        if self.frame(42, b"1700000000000") != sample_frame(self.job_id, 42, 1_700_000_000_000):
            raise RuntimeError("token frame template differs from TokenFrame.model_dump_json()")


def templates(keys: Keys, tag: str, count: int) -> list[FrameTemplate]:
    built = [FrameTemplate.build(keys, job_id) for job_id in job_ids(tag, count)]
    built[0].check()
    return built
