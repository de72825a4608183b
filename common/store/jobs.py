"""The job record, the hash `genq:{id}:job`, and the job's cancel key `genq:{id}:cancel`.

Encoding (version 1, one field per JobRecord attribute): scalars as text, booleans as `1`/`0`,
`spec` and `result` as JSON (`result` empty until the job succeeded). Records written before
booleans were `1`/`0` hold `True`/`False`, which still read (pydantic's lax bool parsing).

The Lua scripts that move a job between states read and write this hash too: CLAIM, FINISH,
RENEW and REAP in common/store/leases.py, SUBMIT in common/store/batches.py, CHECKPOINT in
common/store/streams.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from genq.common.errors import InvalidEntry
from genq.common.schemas import JobRecord, JobResult, JobSpec, describe_validation
from genq.common.store.command import Command
from genq.common.store.keys import Keys

_JSON_FIELDS = frozenset({"spec", "result"})


def record_key(keys: Keys, job_id: str) -> str:
    """The job's hash (also named in the scripts that move a job between states)."""
    return keys.per_job(job_id, "job")


def cancel_key(keys: Keys, job_id: str) -> str:
    return keys.per_job(job_id, "cancel")


def _text(value: Any) -> str:
    if isinstance(value, bool):  # before int: a bool is an int
        return "1" if value else "0"
    return str(value)


def encode(record: JobRecord) -> dict[str, str]:
    """The hash fields of a record."""
    out = {
        name: _text(value)
        for name, value in record.model_dump(mode="json").items()
        if name not in _JSON_FIELDS
    }
    out["spec"] = record.spec.model_dump_json()
    out["result"] = record.result.model_dump_json() if record.result else ""
    return out


def decode(raw: Mapping[Any, Any]) -> JobRecord:
    """A record from its hash fields; ValidationError or KeyError when genq did not write it
    (see `parse` for genq's error)."""
    fields: dict[str, object] = dict(raw)
    fields["spec"] = JobSpec.model_validate_json(raw["spec"])
    result = raw.get("result")
    fields["result"] = JobResult.model_validate_json(result) if result else None
    return JobRecord.model_validate(fields)


def parse(job_id: str, raw: Mapping[Any, Any]) -> JobRecord:
    """A record from its hash fields; InvalidEntry when it is not one genq wrote."""
    try:
        return decode(raw)
    except ValidationError as exc:
        reason = describe_validation(exc)
    except KeyError as exc:
        reason = f"no field {exc}"
    raise InvalidEntry(f"job {job_id}: its record does not validate: {reason}")


def _record_or_none(job_id: str, raw: Mapping[Any, Any]) -> JobRecord | None:
    return parse(job_id, raw) if raw else None


def read(keys: Keys, job_id: str) -> Command[JobRecord | None]:
    """One job's record; None when no such job is kept; InvalidEntry when it does not
    validate."""
    return Command(
        (("HGETALL", record_key(keys, job_id)),),
        lambda replies: _record_or_none(job_id, replies[0]),
    )


def read_many(keys: Keys, job_ids: Sequence[str]) -> Command[list[JobRecord | None]]:
    """Several jobs' records in one round trip, in order (None for a job not kept)."""
    ids = list(job_ids)

    def decode_all(replies: list[Any]) -> list[JobRecord | None]:
        return [_record_or_none(j, raw) for j, raw in zip(ids, replies, strict=True)]

    return Command(tuple(("HGETALL", record_key(keys, j)) for j in ids), decode_all)


def fields(keys: Keys, job_id: str) -> Command[dict[str, str]]:
    """One job's hash fields undecoded ({} when no such job is kept), for a reader that
    tolerates a record genq did not write (it decodes with `parse` and goes on)."""
    return Command((("HGETALL", record_key(keys, job_id)),), lambda replies: dict(replies[0]))


def _none(replies: list[Any]) -> None:
    return None


def write(keys: Keys, job_id: str, record: JobRecord, ttl_s: int) -> Command[None]:
    """Store a new job's record, kept for `ttl_s`."""
    key = record_key(keys, job_id)
    pairs = [part for item in encode(record).items() for part in item]
    return Command((("HSET", key, *pairs), ("EXPIRE", key, ttl_s)), _none)


def mark_dispatched(keys: Keys, job_ids: Sequence[str]) -> Command[None]:
    """Record that the jobs' task messages were sent to the broker."""
    return Command(
        tuple(("HSET", record_key(keys, j), "dispatched", _text(True)) for j in job_ids), _none
    )


def exists(keys: Keys, job_id: str) -> Command[bool]:
    return Command((("EXISTS", record_key(keys, job_id)),), lambda replies: bool(replies[0]))


def delete(keys: Keys, job_id: str) -> Command[None]:
    return Command((("DEL", record_key(keys, job_id)),), _none)


def request_cancel(keys: Keys, job_id: str, ttl_s: int) -> Command[None]:
    """Set the job's cancel key: CLAIM refuses to start it, and a running job's publisher
    sees it at its next chunk."""
    return Command((("SET", cancel_key(keys, job_id), "1", "EX", ttl_s),), _none)


def cancel_requested(keys: Keys, job_id: str) -> Command[bool]:
    return Command((("EXISTS", cancel_key(keys, job_id)),), lambda replies: bool(replies[0]))
