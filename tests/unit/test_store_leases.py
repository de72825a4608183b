"""genq.common.store.leases without Redis: the KEYS and ARGV each lifecycle script is called with,
and how its replies become typed values."""

from __future__ import annotations

from typing import Any

import pytest

from genq.common.errors import InvalidEntry
from genq.common.schemas import JobRecord, JobSpec, JobState
from genq.common.store import batches, jobs, leases, streams
from genq.common.store.command import Command
from genq.common.store.keys import Keys
from genq.common.store.leases import ClaimOutcome, Ending, ReapAction, Reaped

KEYS = Keys("staging")
JOB = "ab" * 16
OTHER = "cd" * 16


def parts(command: Command[Any], script: str) -> tuple[list[Any], list[Any]]:
    """KEYS and ARGV of a command that is one EVAL of `script`."""
    (call,) = command.calls
    assert call[:2] == ("EVAL", script)
    count = call[2]
    return list(call[3 : 3 + count]), list(call[3 + count :])


def flat(record: JobRecord) -> list[str]:
    """A hash as a script's HGETALL returns it: field, value, field, value..."""
    return [part for item in jobs.encode(record).items() for part in item]


def running(**update: object) -> JobRecord:
    record = JobRecord(
        spec=JobSpec(prompt="x"), state=JobState.RUNNING, queue="cpu.tiny", submitted_ms=1
    )
    return record.model_copy(update=update)


# CLAIM


def test_a_claim_names_both_indexes_then_each_jobs_hash_and_cancel_key() -> None:
    command = leases.claim(KEYS, [(JOB, 0), (OTHER, 2)], "w1", 1000, 30_000)
    names, args = parts(command, leases.CLAIM)
    assert names == [
        "staging:leases",
        "staging:expiries",
        jobs.record_key(KEYS, JOB),
        jobs.cancel_key(KEYS, JOB),
        jobs.record_key(KEYS, OTHER),
        jobs.cancel_key(KEYS, OTHER),
    ]
    assert args == [1000, 30_000, "w1", "staging", 0, JOB, 0, OTHER, 2]


def test_a_fair_claim_says_so_after_the_key_prefix() -> None:
    _, args = parts(leases.claim(KEYS, [(JOB, 0)], "w1", 5, 10, fair=True), leases.CLAIM)
    assert args[3:5] == ["staging", 1]


def test_claim_replies_become_outcomes_with_the_claimed_jobs_records() -> None:
    command = leases.claim(KEYS, [(JOB, 0), (OTHER, 0)], "w1", 5, 10)
    record = running(worker="w1", attempts=1)
    [first, second] = command.reply(
        [["claimed", OTHER, flat(record), [JOB, "cancelled"], "held", OTHER, [], []]]
    )
    assert (first.job_id, first.outcome, first.record) == (OTHER, ClaimOutcome.CLAIMED, record)
    assert first.dropped == ((JOB, ClaimOutcome.CANCELLED),)
    assert (second.job_id, second.outcome, second.record) == (OTHER, ClaimOutcome.HELD, None)


@pytest.mark.parametrize("outcome", [o for o in ClaimOutcome if o is not ClaimOutcome.CLAIMED])
def test_every_outcome_but_claimed_carries_no_record(outcome: ClaimOutcome) -> None:
    reply: list[Any] = [[outcome.value, JOB, [], []]]
    [claim] = leases.claim(KEYS, [(JOB, 0)], "w1", 5, 10).reply(reply)
    assert (claim.outcome, claim.record) == (outcome, None)


def test_a_claimed_record_genq_did_not_write_is_an_invalid_entry() -> None:
    command = leases.claim(KEYS, [(JOB, 0)], "w1", 5, 10)
    with pytest.raises(InvalidEntry, match=f"job {JOB}"):
        command.reply([["claimed", JOB, ["state", "running"], []]])


def test_an_outcome_genq_does_not_know_is_refused() -> None:
    with pytest.raises(ValueError, match="grabbed"):
        leases.claim(KEYS, [(JOB, 0)], "w1", 5, 10).reply([["grabbed", JOB, [], []]])


# RENEW


def test_a_renewal_names_the_lease_index_then_each_jobs_hash_with_its_epoch() -> None:
    command = leases.renew(KEYS, [(JOB, 3), (OTHER, 0)], 99_000)
    names, args = parts(command, leases.RENEW)
    assert names == ["staging:leases", jobs.record_key(KEYS, JOB), jobs.record_key(KEYS, OTHER)]
    assert args == [99_000, JOB, 3, OTHER, 0]
    assert command.reply([[1, 0]]) == [True, False]


# FINISH


def test_a_finish_names_the_job_and_both_indexes_and_its_argv_is_the_fence_first() -> None:
    ending = Ending(JOB, 4, "", JobState.RUNNING, {"state": "succeeded", "tokens": 7}, "{}", 7)
    command = leases.finish(KEYS, ending, 600, 123)
    names, args = parts(command, leases.FINISH)
    assert names == [jobs.record_key(KEYS, JOB), "staging:leases", "staging:expiries"]
    assert args[:8] == [JOB, 4, "running", 600, streams.channel(KEYS, JOB), "{}", 7, 123]
    assert args[8:10] == ["staging", 0]  # the key prefix, prompt tokens
    assert args[10:] == ["state", "succeeded", "tokens", "7"]
    assert (command.reply([1]), command.reply([0])) == (True, False)


def test_a_batch_jobs_finish_adds_its_hash_list_index_and_ended_channel() -> None:
    ending = Ending(JOB, 0, "b1", JobState.QUEUED, {"state": "cancelled"}, "{}")
    names, _ = parts(leases.finish(KEYS, ending, 60, 1), leases.FINISH)
    assert names[3:] == [
        batches.record_key(KEYS, "b1"),
        batches.jobs_key(KEYS, "b1"),
        batches.index_key(KEYS, "b1"),
        batches.ended_channel(KEYS, "b1"),
    ]


# REAP


def test_a_reap_names_the_lease_index_the_job_and_its_stream() -> None:
    command = leases.reap(KEYS, JOB, "", 1000, 3, 500, 600)
    names, args = parts(command, leases.REAP)
    assert names == ["staging:leases", jobs.record_key(KEYS, JOB), streams.stream_key(KEYS, JOB)]
    assert args == [JOB, 1000, 3, 500, 600]
    names, _ = parts(leases.reap(KEYS, JOB, "b1", 1000, 3, 500, 600), leases.REAP)
    assert names[3:] == [batches.record_key(KEYS, "b1")]


def test_reap_replies_become_an_action_and_typed_numbers() -> None:
    command = leases.reap(KEYS, JOB, "", 1000, 3, 500, 600)
    reaped = command.reply([["requeue", 2, "cpu.tiny", 1, 5]])
    assert reaped == Reaped(ReapAction.REQUEUE, 2, "cpu.tiny", 1, 5)
    assert command.reply([["live", 0, "", 0, 0]]).action is ReapAction.LIVE


# The expiry index


def test_a_jobs_expiry_is_indexed_by_its_time() -> None:
    command = leases.add_expiry(KEYS, JOB, 77)
    assert command.calls == (("ZADD", "staging:expiries", 77, JOB),)
    assert command.reply([1]) is None


def test_the_reaper_reads_lapsed_leases_and_the_expirer_due_expiries_a_page_at_a_time() -> None:
    lapsed = leases.lapsed(KEYS, 1_000, 100)
    assert lapsed.calls == (("ZRANGEBYSCORE", "staging:leases", "-inf", 1_000, "LIMIT", 0, 100),)
    assert lapsed.reply([[JOB, OTHER]]) == [JOB, OTHER]
    due = leases.due_expiries(KEYS, 2_000, 50)
    assert due.calls == (("ZRANGEBYSCORE", "staging:expiries", "-inf", 2_000, "LIMIT", 0, 50),)
    assert due.reply([[]]) == []
    dropped = leases.drop_expiry(KEYS, JOB)
    assert dropped.calls == (("ZREM", "staging:expiries", JOB),)
    assert dropped.reply([1]) is None


def test_deadline_reads_the_jobs_lease_or_none() -> None:
    command = leases.deadline(KEYS, JOB)
    assert command.calls == (("ZSCORE", "staging:leases", JOB),)
    assert command.reply(["1700000000123"]) == 1_700_000_000_123
    assert command.reply([None]) is None
