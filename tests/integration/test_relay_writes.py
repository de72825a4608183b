"""genq.common.store.stream_writes (the relay's writes) against a real Redis: the replies of a
batch are read in bulk, and only refusals other than fencing are reported."""

from __future__ import annotations

import redis

from genq.common.frames import TokenData, TokenFrame
from genq.common.ids import new_job_id
from genq.common.store import streams
from genq.common.store.keys import Keys
from genq.common.store.stream_writes import FrameWrite, StreamWriter
from genq.workers.relay.admission import Admission
from genq.workers.relay.metrics import RelayStats
from tests.state import stream_length

KEYS = Keys()


def tokens(job_id: str, *seqs: int) -> list[FrameWrite]:
    admission = Admission(None, KEYS, RelayStats())  # type: ignore[arg-type]
    data = TokenData(text="é", token_ids=[5])
    raws = [TokenFrame(job_id=job_id, epoch=1, seq=s, data=data).model_dump_json() for s in seqs]
    return [frame for raw in raws if (frame := admission._validate(raw.encode())) is not None]


def test_a_refusal_other_than_fencing_is_reported_and_the_batch_still_lands(
    redis_client: redis.Redis,
) -> None:
    fenced, broken = new_job_id(), new_job_id()
    # A raw write on purpose: a key of a type genq never gives a stream.
    redis_client.set(streams.stream_key(KEYS, broken), "not a stream")
    writer = StreamWriter(redis_client, KEYS, ttl_s=60)
    writer.send(tokens(fenced, 1, 2, 1))  # the third: a duplicate id, refused
    writer.send(tokens(broken, 1))
    failures = writer.settle(0)
    writer.close()
    assert stream_length(redis_client, KEYS, fenced) == 2
    assert len(failures) == 1 and "WRONGTYPE" in str(failures[0])


def test_a_batch_without_refusals_reports_nothing(redis_client: redis.Redis) -> None:
    job_id = new_job_id()
    writer = StreamWriter(redis_client, KEYS, ttl_s=60)
    writer.send(tokens(job_id, *range(1, 501)))
    failures = writer.settle(0)
    writer.close()
    assert stream_length(redis_client, KEYS, job_id) == 500
    assert failures == []
