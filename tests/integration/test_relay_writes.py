"""genq.workers.relay.writes against a real Redis: the replies of a batch are read in bulk, and only
refusals other than fencing are logged."""

from __future__ import annotations

import logging

import pytest
import redis

from genq.common.frames import TokenData, TokenFrame
from genq.common.ids import new_job_id
from genq.common.store.keys import Keys
from genq.workers.relay.admission import Admission, Admitted
from genq.workers.relay.metrics import RelayStats
from genq.workers.relay.writes import Writer

KEYS = Keys()


def tokens(job_id: str, *seqs: int) -> list[Admitted]:
    admission = Admission(None, KEYS, RelayStats())  # type: ignore[arg-type]
    data = TokenData(text="é", token_ids=[5])
    raws = [TokenFrame(job_id=job_id, epoch=1, seq=s, data=data).model_dump_json() for s in seqs]
    return [frame for raw in raws if (frame := admission._validate(raw.encode())) is not None]


def test_a_refusal_other_than_fencing_is_logged_and_the_batch_still_lands(
    redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    fenced, broken = new_job_id(), new_job_id()
    redis_client.set(KEYS.stream(broken), "not a stream")
    writer = Writer(redis_client, KEYS, ttl_s=60)
    with caplog.at_level(logging.ERROR, logger="genq.relay"):
        writer.send(tokens(fenced, 1, 2, 1))  # the third: a duplicate id, refused
        writer.send(tokens(broken, 1))
        writer.settle(0)
    writer.close()
    assert redis_client.xlen(KEYS.stream(fenced)) == 2
    failures = [record.getMessage() for record in caplog.records]
    assert len(failures) == 1 and "WRONGTYPE" in failures[0]


def test_a_batch_without_refusals_logs_nothing(
    redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = new_job_id()
    writer = Writer(redis_client, KEYS, ttl_s=60)
    with caplog.at_level(logging.ERROR, logger="genq.relay"):
        writer.send(tokens(job_id, *range(1, 501)))
        writer.settle(0)
    writer.close()
    assert redis_client.xlen(KEYS.stream(job_id)) == 500
    assert caplog.records == []
