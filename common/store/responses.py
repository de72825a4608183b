"""What the gateway keeps of a response (`POST /v1/responses`) beside its job: the request's
echoed fields and whose it is (`ResponseRecord`).

Keys: `genq:{<job id>}:resp`, a string holding a ResponseRecord as JSON (version 1), in the
job's slot, kept GENQ_JOB_TTL_S from its creation and, once its job ended, as long as its
job's record (a job is kept GENQ_JOB_TTL_S from its end: FINISH in leases.py extends the
response's record with it, and `read` does too). A response that is not background
is a client of its job as a chat stream is: `create` also counts its waiting client in the
job's gateway hash, or sets the deadline by which one must attach (common/store/gateway.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from genq.common.store import gateway, jobs
from genq.common.store.command import Command
from genq.common.store.keys import Keys
from genq.common.tenants import DEFAULT_TENANT

# KEYS: the response's record, its job's record. -> the response's record (or nil).
# A job that ends is kept GENQ_JOB_TTL_S from its end, later than its response's record made at
# its submit: each read extends the response's expiry to its job's, never shortens it.
READ = """
local job_ms = redis.call('PTTL', KEYS[2])
if job_ms > 0 and job_ms > redis.call('PTTL', KEYS[1]) then
  redis.call('PEXPIRE', KEYS[1], job_ms)
end
return redis.call('GET', KEYS[1])
"""


class ResponseRecord(BaseModel):
    """The fields a response object echoes, fixed at its creation."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1] = 1
    tenant: str = DEFAULT_TENANT
    created_at: int  # Unix seconds, OpenAI's `created_at`
    model: str
    background: bool = False
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    metadata: dict[str, str] | None = None
    store: bool = True
    logprobs: bool = False  # `include` asked for message.output_text.logprobs
    top_logprobs: int | None = None
    user: str | None = None


def record_key(keys: Keys, job_id: str) -> str:
    return keys.per_job(job_id, "resp")


def _none(replies: list[Any]) -> None:
    return None


def create(
    keys: Keys,
    job_id: str,
    record: ResponseRecord,
    ttl_s: int,
    attached: int = 0,
    deadline_ms: int | None = None,
) -> Command[None]:
    """A response's record, kept for `ttl_s`, in one round trip with its client's count
    (`attached`) or the deadline by which one must attach, when it has either."""
    key = record_key(keys, job_id)
    calls: list[tuple[Any, ...]] = [("SET", key, record.model_dump_json(), "EX", ttl_s)]
    if attached or deadline_ms is not None:
        counted = gateway.meta_key(keys, job_id)
        calls += [("HINCRBY", counted, "attached", attached), ("EXPIRE", counted, ttl_s)]
    if deadline_ms is not None:
        calls.extend(gateway.set_deadline(keys, job_id, deadline_ms).calls)
    return Command(tuple(calls), _none)


def read(keys: Keys, job_id: str) -> Command[ResponseRecord | None]:
    """A response's record; None when the gateway keeps none (never made, deleted, expired).
    Read, it is kept at least as long as its job's record (see READ)."""

    def decode(replies: list[Any]) -> ResponseRecord | None:
        raw = replies[0]
        return None if raw is None else ResponseRecord.model_validate_json(raw)

    call = ("EVAL", READ, 2, record_key(keys, job_id), jobs.record_key(keys, job_id))
    return Command((call,), decode)


def delete(keys: Keys, job_id: str) -> Command[bool]:
    """Forget a response; True when there was one."""
    return Command((("DEL", record_key(keys, job_id)),), lambda replies: bool(replies[0]))
