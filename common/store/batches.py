"""A batch: its record, the hash `genq:batch:{bid}`; its job ids in input order, the list
`...:jobs`; its custom_id -> job id index, the hash `...:ids`; and its `...:ended` channel, on
which FINISH publishes the id of each job of the batch as it ends.

Encoding of the record (version 1): integer fields as text (`total` and the counts by state,
`tokens`, `priority`, `created_ms`, `finished_ms`, `expires_ms`), `tenant` (a record without
it is `default`'s), and the flag `cancel_requested` as `1`. Records written before the flag
was `1` hold `True`, which still reads here (pydantic's lax bool parsing) and in the CLAIM
and SUBMIT scripts. Fields genq does not know are ignored.

SUBMIT (below) writes a chunk of the batch's jobs; the other scripts that keep the counts
(FINISH, REAP, CLAIM) are in common/store/leases.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from genq.common.errors import ErrorCode
from genq.common.schemas import BatchStatus, JobRecord, JobState, ResultError, ResultLine
from genq.common.store import fair
from genq.common.store import jobs as job_store
from genq.common.store.command import Command
from genq.common.store.indexes import expiries_key
from genq.common.store.keys import Keys
from genq.common.tenants import DEFAULT_TENANT

CANCEL_FLAG = "1"  # how the record's `cancel_requested` is written

# KEYS: the record, the jobs list, the index, the expiries sorted set, then one job hash per
# job. ARGV: the retention (s), the key prefix, then per job its custom_id, job id, expiry (ms,
# 0 for none) and its job hash fields as a JSON object. Each job created enters its tenant's
# fair-share waiting set (common/store/fair.py). Returns the ids of the jobs it created (a
# custom_id the index has is skipped), or false when the batch was cancelled (it takes no new
# jobs).
SUBMIT = f"""
local P = ARGV[2]
{fair.LUA}
local flag = redis.call('HGET', KEYS[1], 'cancel_requested')
if flag == '1' or flag == 'True' then return false end
local created = {{}}
for i = 5, #KEYS do
  local a = (i - 5) * 4 + 1
  if redis.call('HSETNX', KEYS[3], ARGV[a + 2], ARGV[a + 3]) == 1 then
    local fields = cjson.decode(ARGV[a + 5])
    local flat = {{}}
    for name, value in pairs(fields) do
      flat[#flat + 1] = name
      flat[#flat + 1] = value
    end
    redis.call('HSET', KEYS[i], unpack(flat))
    redis.call('EXPIRE', KEYS[i], ARGV[1])
    redis.call('RPUSH', KEYS[2], ARGV[a + 3])
    if tonumber(ARGV[a + 4]) > 0 then redis.call('ZADD', KEYS[4], ARGV[a + 4], ARGV[a + 3]) end
    fair_enter(fields.queue, fields.tenant, ARGV[a + 3], fields.priority)
    created[#created + 1] = ARGV[a + 3]
  end
end
if #created > 0 then
  redis.call('HINCRBY', KEYS[1], 'total', #created)
  redis.call('HINCRBY', KEYS[1], 'queued', #created)
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
return created
"""

# A job's hash fields that make its results line (see `result_line`).
RESULT_FIELDS = ("state", "custom_id", "result", "error", "error_code")


@dataclass(frozen=True)
class Opening:
    """The record's settings, written (if absent) with the batch's first chunk of jobs."""

    created_ms: int
    priority: int
    expires_ms: int
    tenant: str = DEFAULT_TENANT


@dataclass(frozen=True)
class NewJob:
    """One job of a chunk SUBMIT writes."""

    custom_id: str
    job_id: str
    record: JobRecord


def record_key(keys: Keys, batch_id: str) -> str:
    """The batch's record (its keys share the tag of its id, as a job's keys do)."""
    return f"{keys.prefix}:batch:{{{batch_id}}}"


def jobs_key(keys: Keys, batch_id: str) -> str:
    return f"{record_key(keys, batch_id)}:jobs"


def index_key(keys: Keys, batch_id: str) -> str:
    return f"{record_key(keys, batch_id)}:ids"


def ended_channel(keys: Keys, batch_id: str) -> str:
    """The channel FINISH announces each ending job of the batch on, which a waiter
    subscribes to before it reads the batch."""
    return f"{record_key(keys, batch_id)}:ended"


def decode_status(batch_id: str, raw: Mapping[Any, Any]) -> BatchStatus:
    """A status from the record's fields (an empty record gives zero counts)."""
    fields = {name: raw[name] for name in BatchStatus.model_fields if name in raw}
    return BatchStatus.model_validate({**fields, "batch_id": batch_id})


def status(keys: Keys, batch_id: str) -> Command[BatchStatus | None]:
    """The batch's counts by state; None when no such batch is kept."""

    def decode(replies: list[Any]) -> BatchStatus | None:
        return decode_status(batch_id, replies[0]) if replies[0] else None

    return Command((("HGETALL", record_key(keys, batch_id)),), decode)


def _created(replies: list[Any]) -> set[str] | None:
    created = replies[-1]  # after the opening's HSETNX replies
    return None if created is None else {str(job_id) for job_id in created}


def submit(
    keys: Keys, batch_id: str, jobs: Sequence[NewJob], ttl_s: int, opening: Opening | None
) -> Command[set[str] | None]:
    """Write the jobs the batch does not have yet (by custom_id), all kept for `ttl_s`; the ids
    of those created, or None when the batch was cancelled. With `opening`, the record's
    settings are written first: queue it in a transaction (see `queue`), so that a batch exists
    only once a job of it does."""
    record = record_key(keys, batch_id)
    names = [
        record,
        jobs_key(keys, batch_id),
        index_key(keys, batch_id),
        expiries_key(keys),
        *(job_store.record_key(keys, job.job_id) for job in jobs),
    ]
    args: list[Any] = [ttl_s, keys.prefix]
    for job in jobs:
        encoded = json.dumps(job_store.encode(job.record))
        args += [job.custom_id, job.job_id, job.record.expires_ms, encoded]
    calls: list[tuple[Any, ...]] = []
    if opening is not None:
        calls += [
            ("HSETNX", record, "created_ms", opening.created_ms),
            ("HSETNX", record, "priority", opening.priority),
            ("HSETNX", record, "expires_ms", opening.expires_ms),
            ("HSETNX", record, "tenant", opening.tenant),
        ]
    calls.append(("EVAL", SUBMIT, len(names), *names, *args))
    return Command(tuple(calls), _created)


def job_ids_of(keys: Keys, batch_id: str, custom_ids: Sequence[str]) -> Command[list[str]]:
    """The job ids the index holds for `custom_ids` (those it does not hold left out)."""

    def decode(replies: list[Any]) -> list[str]:
        return [str(job_id) for job_id in replies[0] if job_id is not None]

    return Command((("HMGET", index_key(keys, batch_id), *custom_ids),), decode)


def job_ids(keys: Keys, batch_id: str, start: int, count: int) -> Command[list[str]]:
    """`count` of the batch's job ids in input order from `start` (fewer at its end)."""
    key = jobs_key(keys, batch_id)
    return Command(
        (("LRANGE", key, start, start + count - 1),),
        lambda replies: [str(job_id) for job_id in replies[0]],
    )


def result_fields(keys: Keys, job_ids: Sequence[str]) -> Command[list[list[str | None]]]:
    """Each job's `RESULT_FIELDS` in order (None for a field or a job no longer kept), for
    `result_line`."""
    return Command(
        tuple(("HMGET", job_store.record_key(keys, job_id), *RESULT_FIELDS) for job_id in job_ids),
        lambda replies: [list(row) for row in replies],
    )


def _none(replies: list[Any]) -> None:
    return None


def request_cancel(keys: Keys, batch_id: str) -> Command[None]:
    """Flag the batch cancelled: CLAIM starts none of its jobs and SUBMIT adds none to it,
    whatever becomes of the jobs' own cancel keys."""
    return Command((("HSET", record_key(keys, batch_id), "cancel_requested", CANCEL_FLAG),), _none)


def result_line(job_id: str, values: Sequence[str | None]) -> ResultLine | None:
    """A job's results line from its `RESULT_FIELDS`; None while it has not ended."""
    state, custom_id, result, error, code = values
    if state is None:  # the record's retention passed
        message = "the job's record is no longer kept (GENQ_JOB_TTL_S)"
        err = ResultError(code=ErrorCode.NOT_RETAINED, message=message)
        return ResultLine(custom_id="", job_id=job_id, status=JobState.FAILED, error=err)
    state_ = JobState(state)
    if not state_.terminal:
        return None
    fields: dict[str, Any] = {"custom_id": custom_id or "", "job_id": job_id, "status": state_}
    if result:
        outcome = json.loads(result)
        fields |= {k: outcome[k] for k in ("text", "finish_reason", "usage")}
    if error:
        fields["error"] = {"code": code or ErrorCode.GENERATION_FAILED, "message": error}
    return ResultLine.model_validate(fields)
