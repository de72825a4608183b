"""The store's commands, without Redis: the calls each makes and how it decodes replies."""

from __future__ import annotations

import pytest

from genq.common.errors import InvalidEntry
from genq.common.schemas import JobRecord, JobSpec, JobState
from genq.common.store import jobs
from genq.common.store.keys import Keys

KEYS = Keys()
JOB = "ab" * 16
OTHER = "cd" * 16


def _record(**update: object) -> JobRecord:
    record = JobRecord(
        spec=JobSpec(prompt="x"), state=JobState.QUEUED, queue="cpu.tiny", submitted_ms=1
    )
    return record.model_copy(update=update)


def test_booleans_are_written_as_one_and_zero() -> None:
    assert jobs.encode(_record(dispatched=True))["dispatched"] == "1"
    assert jobs.encode(_record(dispatched=False))["dispatched"] == "0"


@pytest.mark.parametrize(
    ("stored", "value"), [("True", True), ("False", False), ("1", True), ("0", False)]
)
def test_a_record_reads_booleans_in_both_spellings(stored: str, value: bool) -> None:
    raw = {**jobs.encode(_record()), "dispatched": stored}
    assert jobs.decode(raw).dispatched is value


def test_a_record_round_trips_through_its_hash_fields() -> None:
    record = _record(batch_id="b", custom_id="line-1", dispatched=False, expires_ms=5)
    raw = jobs.encode(record)
    assert all(isinstance(v, str) for v in raw.values())
    assert jobs.decode(raw) == record


def test_reading_a_job_is_one_hgetall_of_its_hash() -> None:
    command = jobs.read(KEYS, JOB)
    assert command.calls == (("HGETALL", f"genq:{{{JOB}}}:job"),)
    assert command.reply([{}]) is None
    assert command.reply([jobs.encode(_record())]) == _record()


def test_reading_a_record_genq_did_not_write_is_an_invalid_entry() -> None:
    with pytest.raises(InvalidEntry, match=f"job {JOB}: .*no field 'spec'"):
        jobs.read(KEYS, JOB).reply([{"state": "queued"}])


def test_reading_many_jobs_decodes_each_reply_in_order() -> None:
    command = jobs.read_many(KEYS, [JOB, OTHER])
    assert [call[1] for call in command.calls] == [
        jobs.record_key(KEYS, JOB),
        jobs.record_key(KEYS, OTHER),
    ]
    assert command.reply([{}, jobs.encode(_record(attempts=2))]) == [None, _record(attempts=2)]


def test_writing_a_job_sets_its_fields_then_its_retention() -> None:
    hset, expire = jobs.write(KEYS, JOB, _record(), ttl_s=60).calls
    assert hset[:2] == ("HSET", jobs.record_key(KEYS, JOB))
    assert dict(zip(hset[2::2], hset[3::2], strict=True)) == jobs.encode(_record())
    assert expire == ("EXPIRE", jobs.record_key(KEYS, JOB), 60)


def test_marking_jobs_dispatched_writes_one() -> None:
    command = jobs.mark_dispatched(KEYS, [JOB, OTHER])
    assert command.calls == tuple(
        ("HSET", jobs.record_key(KEYS, j), "dispatched", "1") for j in (JOB, OTHER)
    )


def test_a_cancel_request_is_the_jobs_cancel_key_with_a_retention() -> None:
    command = jobs.request_cancel(KEYS, JOB, ttl_s=30)
    assert command.calls == (("SET", f"genq:{{{JOB}}}:cancel", "1", "EX", 30),)
    assert jobs.cancel_requested(KEYS, JOB).reply([1]) is True
    assert jobs.cancel_requested(KEYS, JOB).reply([0]) is False


def test_a_jobs_fields_are_read_undecoded_for_tolerant_readers() -> None:
    command = jobs.fields(KEYS, JOB)
    assert command.calls == (("HGETALL", jobs.record_key(KEYS, JOB)),)
    assert command.reply([{"state": "bogus"}]) == {"state": "bogus"}
