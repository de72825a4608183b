"""What the gateway keeps of an OpenAI batch beside genq's own batch of the same id
(common/store/batches.py): its input file, endpoint, window, metadata, its validation state and
errors, and its output and error files once written.

Keys: `genq:openai-batch:{<batch id>}`, a string holding an `ApiBatch` as JSON (version 1),
kept for the retention; `genq:openai-batches`, a sorted set of batch ids by creation time (ms),
and `genq:openai-batches:tenant:<tenant>`, the same of one tenant's batches, which listings
read, pruned of batches older than the retention as they are read (every listing prunes
`genq:openai-batches`); a tenant's index expires a retention after its newest batch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from genq.common.store.command import Command
from genq.common.store.keys import Keys
from genq.common.tenants import DEFAULT_TENANT, TenantName

ApiBatchState = Literal["validating", "submitted", "failed"]


class LineErrorInfo(BaseModel):
    """One of a failed batch's errors, as OpenAI's batch `errors.data` holds them."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None


class ApiBatch(BaseModel):
    """The gateway's record of a batch."""

    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = 1
    batch_id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    window_s: int = Field(ge=1)
    metadata: dict[str, str] | None = None
    created_ms: int
    tenant: TenantName = DEFAULT_TENANT
    state: ApiBatchState = "validating"
    submitted_ms: int = 0
    failed_ms: int = 0
    cancelling_ms: int = 0
    errors: list[LineErrorInfo] = Field(default_factory=list)
    output_file_id: str = Field(description="Reserved at creation; used once written.")
    error_file_id: str = Field(description="Reserved at creation; used once written.")
    files_written: bool = Field(False, description="The output and error files were written.")
    output_lines: int = 0
    error_lines: int = 0


def _key(keys: Keys, batch_id: str) -> str:
    return f"{keys.prefix}:openai-batch:{{{batch_id}}}"


def _index_key(keys: Keys, tenant: str | None = None) -> str:
    """Every batch's index; with `tenant`, that tenant's batches' only."""
    every = f"{keys.prefix}:openai-batches"
    return every if tenant is None else f"{every}:tenant:{tenant}"


def write(keys: Keys, batch: ApiBatch, ttl_s: int) -> Command[None]:
    """Store (or replace) a batch's record, kept for `ttl_s`, and list it."""
    return Command(
        (
            ("SET", _key(keys, batch.batch_id), batch.model_dump_json(), "EX", ttl_s),
            ("ZADD", _index_key(keys), batch.created_ms, batch.batch_id),
            ("ZADD", _index_key(keys, batch.tenant), batch.created_ms, batch.batch_id),
            ("EXPIRE", _index_key(keys, batch.tenant), ttl_s),  # all past retention by then
        ),
        lambda replies: None,
    )


def forget(keys: Keys, batch: ApiBatch) -> Command[None]:
    """Remove a batch's record and its index entries (a batch refused before any job of it
    was queued)."""
    return Command(
        (
            ("DEL", _key(keys, batch.batch_id)),
            ("ZREM", _index_key(keys), batch.batch_id),
            ("ZREM", _index_key(keys, batch.tenant), batch.batch_id),
        ),
        lambda replies: None,
    )


def _decode(raw: Any) -> ApiBatch | None:
    return None if raw is None else ApiBatch.model_validate_json(raw)


def read(keys: Keys, batch_id: str) -> Command[ApiBatch | None]:
    """A batch's record; None when the gateway keeps none."""
    return Command((("GET", _key(keys, batch_id)),), lambda replies: _decode(replies[0]))


def ids_page(
    keys: Keys, kept_since_ms: int, after: str | None, limit: int, tenant: str | None = None
) -> Command[list[str]]:
    """Up to `limit` batch ids (of `tenant`, or of all when None), newest first, after the
    batch `after` (from the newest when None, or when `after` is not listed), after pruning
    those created before `kept_since_ms`."""
    index = _index_key(keys, tenant)
    pruned = dict.fromkeys((_index_key(keys), index))
    calls: list[tuple[Any, ...]] = [
        ("ZREMRANGEBYSCORE", i, "-inf", f"({kept_since_ms}") for i in pruned
    ]
    calls.append(("ZREVRANK", index, after or ""))
    calls.append(("ZREVRANGE", index, 0, -1))

    def decode(replies: list[Any]) -> list[str]:
        rank, every = replies[-2], [str(i) for i in replies[-1]]
        start = 0 if after is None or rank is None else int(rank) + 1
        return every[start : start + limit]

    return Command(tuple(calls), decode)
