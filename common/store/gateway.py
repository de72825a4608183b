"""The gateway's state for streams that survive (producer/gateway): per job, the hash
`genq:{id}:gw` (what a reattach needs to render the same SSE: the request kind, model,
creation time, include_usage; whose job it is, `tenant`; and `attached`, how many clients
stream it now), kept as long as the job (GENQ_JOB_TTL_S); and the sorted set
`genq:gw:detach`, job id -> the time (ms) by which a client must reattach, or the job is
cancelled.

Encoding (version 1): hash fields as text, `include_usage` as `1`/`0`. The detach index names
many jobs (like the lease index), so it needs one Redis node, not a cluster slot per job.

A client that attaches increments `attached` and takes the job off the detach index; one that
leaves decrements it and, at zero, puts the job there. Those two steps are not one script (the
keys hash to different slots), so a sweeper re-reads `attached` before it cancels (`claim`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from genq.common.store.command import Command
from genq.common.store.keys import Keys
from genq.common.tenants import DEFAULT_TENANT

Kind = Literal["chat", "completion"]

# KEYS: the detach index, the job's gateway hash. ARGV: job id.
# Takes a due job off the index; 1 when no client is attached (cancel it), else 0.
CLAIM = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
local attached = tonumber(redis.call('HGET', KEYS[2], 'attached') or '0')
if attached > 0 then return 0 end
return 1
"""


@dataclass(frozen=True)
class StreamMeta:
    """What renders a job's SSE the same on any gateway: OpenAI's chunk shape of the request
    that started it."""

    kind: Kind
    model: str
    created: int  # Unix seconds, OpenAI's `created`
    include_usage: bool
    tenant: str = DEFAULT_TENANT  # whose job it is: only they (or an admin) reattach


def meta_key(keys: Keys, job_id: str) -> str:
    return keys.per_job(job_id, "gw")


def detach_key(keys: Keys) -> str:
    return f"{keys.prefix}:gw:detach"


def _none(replies: list[Any]) -> None:
    return None


def save(keys: Keys, job_id: str, meta: StreamMeta, ttl_s: int) -> Command[None]:
    """Store a stream's meta, kept for `ttl_s` (the job's retention)."""
    key = meta_key(keys, job_id)
    fields = (
        *("v", "1", "kind", meta.kind, "model", meta.model, "created", str(meta.created)),
        *("include_usage", "1" if meta.include_usage else "0", "tenant", meta.tenant),
    )
    return Command((("HSET", key, *fields), ("EXPIRE", key, ttl_s)), _none)


def start(
    keys: Keys,
    job_id: str,
    meta: StreamMeta,
    ttl_s: int,
    attached: int = 0,
    deadline_ms: int | None = None,
) -> Command[None]:
    """The gateway's records of a job it just submitted, in one round trip: its stream meta
    (`save`), `attached` clients counted at once (a request that waits for the result), and
    the deadline by which one must attach (`set_deadline`), if any."""
    calls = [*save(keys, job_id, meta, ttl_s).calls]
    if attached:
        calls.append(("HINCRBY", meta_key(keys, job_id), "attached", attached))
    if deadline_ms is not None:
        calls.extend(set_deadline(keys, job_id, deadline_ms).calls)
    return Command(tuple(calls), _none)


def _meta(raw: dict[str, str]) -> StreamMeta | None:
    if not raw or raw.get("kind") not in ("chat", "completion"):
        return None
    kind: Kind = "chat" if raw["kind"] == "chat" else "completion"
    return StreamMeta(
        kind,
        raw.get("model", ""),
        int(raw.get("created", "0")),
        raw.get("include_usage") == "1",
        raw.get("tenant", DEFAULT_TENANT),
    )


def read(keys: Keys, job_id: str) -> Command[StreamMeta | None]:
    """A job's stream meta; None when the gateway did not start the job (or it expired)."""
    return Command((("HGETALL", meta_key(keys, job_id)),), lambda replies: _meta(dict(replies[0])))


def attach(keys: Keys, job_id: str) -> Command[int]:
    """A client streams the job: count it, and the job no longer waits to be cancelled.
    -> clients attached now."""
    key = meta_key(keys, job_id)
    return Command(
        (("HINCRBY", key, "attached", 1), ("ZREM", detach_key(keys), job_id)),
        lambda replies: int(replies[0]),
    )


def detach(keys: Keys, job_id: str) -> Command[int]:
    """A client left. -> clients still attached (the caller sets a deadline at zero)."""
    key = meta_key(keys, job_id)
    return Command((("HINCRBY", key, "attached", -1),), lambda replies: int(replies[0]))


def set_deadline(keys: Keys, job_id: str, deadline_ms: int) -> Command[None]:
    """Cancel the job at `deadline_ms` unless a client attaches first."""
    return Command((("ZADD", detach_key(keys), deadline_ms, job_id),), _none)


def due(keys: Keys, now_ms: int, limit: int) -> Command[list[str]]:
    """Jobs whose reattach deadline passed, at most `limit`."""
    call = ("ZRANGEBYSCORE", detach_key(keys), "-inf", now_ms, "LIMIT", 0, limit)
    return Command((call,), lambda replies: list(replies[0]))


def claim(keys: Keys, job_id: str) -> Command[bool]:
    """Take a due job off the index: True for the one caller that does, when no client is
    attached (it cancels the job)."""
    call = ("EVAL", CLAIM, 2, detach_key(keys), meta_key(keys, job_id), job_id)
    return Command((call,), lambda replies: bool(replies[0]))


def deadlines(keys: Keys, job_ids: Sequence[str]) -> Command[list[float | None]]:
    """The jobs' reattach deadlines (ms), None where none is set (tests, ops)."""
    return Command(
        tuple(("ZSCORE", detach_key(keys), j) for j in job_ids),
        lambda replies: [None if r is None else float(r) for r in replies],
    )
