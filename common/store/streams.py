"""A job's frames: its live channel `genq:{id}:tokens` (workers publish there, the relay moves
them on), its stream `genq:{id}:stream` (its frames at ids `<epoch>-<seq>`, each entry one
field, FRAME_FIELD `f`: `frame_of` reads it) and its checkpoint list `genq:{id}:ckpt` (entry k:
window k, what a resume needs).

Encoding of a checkpoint entry (version 1): a `CheckpointEntry` as JSON. Entries written before
the version field existed have none and read as version 1.

The relay writes both structures at ~190k frames/s through common/store/stream_writes.py,
which encodes RESP itself; it takes the key names, the CHECKPOINT script and the entry
encoding from here, so that this module stays the one place that defines them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genq.common.errors import InvalidEntry
from genq.common.frames import WindowData
from genq.common.ids import JOB_ID_ALPHABET
from genq.common.schemas import FinishReason, TokenLogprob, describe_validation
from genq.common.store import jobs
from genq.common.store.command import Command
from genq.common.store.keys import Keys

ENTRY_VERSION = 1
FRAME_FIELD = "f"  # a stream entry's one field: the frame's JSON, as its worker published it

# KEYS: checkpoint list, job hash (one job's: the relay pipelines it beside plain XADDs).
# ARGV: epoch, window, entry (JSON).
# Window k is appended only as entry k, only from the job's current epoch, and only while the
# job has a record. -> windows now checkpointed, or -1 (older epoch) / -2 (duplicate or out of
# order) / -3 (no such job)
CHECKPOINT = """
if redis.call('EXISTS', KEYS[2]) == 0 then return -3 end
local epoch = tonumber(redis.call('HGET', KEYS[2], 'epoch') or '0')
if tonumber(ARGV[1]) < epoch then return -1 end
local n = redis.call('LLEN', KEYS[1])
if tonumber(ARGV[2]) ~= n then return -2 end
redis.call('RPUSH', KEYS[1], ARGV[3])
return n + 1
"""

Positions = Mapping[str, str]  # stream key -> the last entry id read
XreadReply = list[Any]  # [[stream key, [(id, fields)]]], as redis-py parses XREAD


class CheckpointEntry(BaseModel):
    """One checkpointed window: its tokens, its released text and, when the job asked for
    them, its logprobs (a resumed job's result needs them too)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1] = 1  # ENTRY_VERSION
    token_ids: list[int]
    text: str
    finish_reason: FinishReason | None = None
    tokens: int | None = Field(None, ge=0, description="A remote model's windows have no ids.")
    logprobs: list[TokenLogprob] | None = None

    @property
    def count(self) -> int:
        """The window's tokens."""
        return len(self.token_ids) if self.tokens is None else self.tokens


def entry_of(data: WindowData) -> CheckpointEntry:
    """What the checkpoint keeps of a window frame."""
    return CheckpointEntry(
        token_ids=data.token_ids,
        text=data.text,
        finish_reason=data.finish_reason,
        tokens=data.count,
        logprobs=data.logprobs,
    )


def encode_entry(entry: CheckpointEntry) -> str:
    return entry.model_dump_json(exclude_none=True)


def parse_entry(job_id: str, raw: str | bytes) -> CheckpointEntry:
    """A checkpoint entry; InvalidEntry when genq did not write it."""
    try:
        return CheckpointEntry.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidEntry(
            f"job {job_id}: a checkpoint entry does not validate: {describe_validation(exc)}"
        ) from None


def frame_of(fields: Mapping[str, Any]) -> Any:
    """The frame (JSON, as stored) of a stream entry's fields; None when it holds none."""
    return fields.get(FRAME_FIELD)


def stream_key(keys: Keys, job_id: str) -> str:
    return keys.per_job(job_id, "stream")


def checkpoint_key(keys: Keys, job_id: str) -> str:
    return keys.per_job(job_id, "ckpt")


def channel(keys: Keys, job_id: str) -> str:
    """The pub/sub channel of a job's live frames, which the relay moves into its stream."""
    return keys.per_job(job_id, "tokens")


def channel_pattern(keys: Keys, share: int = 1, shares: int = 1) -> str:
    """The live channels of share `share` of `shares` (1-based), as a relay subscribes to
    them (GENQ_RELAY_SHARD); all of them when `shares` is 1.

    A share is a glob class on the job id's first character: shares 1 to n-1 name their
    characters of the generated ids' alphabet, and share n takes every other character
    (`[^...]`), so that an id starting with anything at all falls in exactly one share."""
    if shares == 1:
        return f"{keys.prefix}:{{*}}:tokens"
    if share < shares:
        first = f"[{share_characters(share, shares)}]"
    else:
        others = "".join(share_characters(k, shares) for k in range(1, shares))
        first = f"[^{others}]"
    return f"{keys.prefix}:{{{first}*}}:tokens"


def share_characters(share: int, shares: int) -> str:
    """The characters of the job id alphabet that begin share `share` of `shares`: the
    alphabet cut into `shares` runs that differ in length by one at most."""
    size, extra = divmod(len(JOB_ID_ALPHABET), shares)
    start = (share - 1) * size + min(share - 1, extra)
    return JOB_ID_ALPHABET[start : start + size + (share <= extra)]


def _count(replies: list[Any]) -> int:
    return int(replies[0])


def checkpoint(
    keys: Keys, job_id: str, epoch: int, window: int, entry: CheckpointEntry
) -> Command[int]:
    """Append window `window` of attempt `epoch` (see CHECKPOINT for the reply)."""
    call = (
        "EVAL",
        CHECKPOINT,
        2,
        checkpoint_key(keys, job_id),
        jobs.record_key(keys, job_id),
        epoch,
        window,
    )
    return Command(((*call, encode_entry(entry)),), _count)


def entries(keys: Keys, job_id: str) -> Command[list[CheckpointEntry]]:
    """Every checkpointed window, in order; InvalidEntry when one does not validate."""

    def decode(replies: list[Any]) -> list[CheckpointEntry]:
        return [parse_entry(job_id, raw) for raw in replies[0]]

    return Command((("LRANGE", checkpoint_key(keys, job_id), 0, -1),), decode)


def checkpointed(keys: Keys, job_id: str) -> Command[int]:
    """How many windows the checkpoint holds."""
    return Command((("LLEN", checkpoint_key(keys, job_id)),), _count)


def raw_entries(keys: Keys, job_id: str, windows: int) -> Command[list[str]]:
    """The first `windows` entries undecoded, for a reader that tolerates one genq did not
    write (it decodes each with `parse_entry` and goes on)."""
    key = checkpoint_key(keys, job_id)
    return Command((("LRANGE", key, 0, windows - 1),), lambda replies: list(replies[0]))


def read(positions: Positions, count: int, block_ms: int | None) -> Command[XreadReply]:
    """XREAD of several streams after their positions: [(stream key, [(id, fields)])], empty
    when nothing came within `block_ms` (None: do not block)."""
    block = () if block_ms is None else ("BLOCK", block_ms)
    call = ("XREAD", "COUNT", count, *block, "STREAMS", *positions, *positions.values())
    return Command((call,), lambda replies: list(replies[0] or []))


def frames(keys: Keys, job_id: str, start: str = "-", end: str = "+") -> Command[Any]:
    """XRANGE of one job's stream: [(id, fields)]."""
    return Command((("XRANGE", stream_key(keys, job_id), start, end),), lambda r: list(r[0]))


def length(keys: Keys, job_id: str) -> Command[int]:
    """How many entries the job's stream holds (0 when it has none)."""
    return Command((("XLEN", stream_key(keys, job_id)),), _count)


def last_id(keys: Keys, job_id: str) -> Command[str | None]:
    """The id of the job's last stream entry; None while its stream holds none."""

    def decode(replies: list[Any]) -> str | None:
        return str(replies[0][0][0]) if replies[0] else None

    return Command((("XREVRANGE", stream_key(keys, job_id), "+", "-", "COUNT", 1),), decode)


def raw_frames(keys: Keys, job_id: str) -> Command[list[tuple[str, str]]]:
    """One job's whole stream as (entry id, frame JSON), undecoded: a resuming worker folds
    it (genq.workers.generation.resume); an entry without a frame reads as an empty one."""

    def decode(replies: list[Any]) -> list[tuple[str, str]]:
        return [(str(entry_id), frame_of(fields) or "") for entry_id, fields in replies[0]]

    return Command((("XRANGE", stream_key(keys, job_id), "-", "+"),), decode)


def append(keys: Keys, job_id: str, entry_id: str, frame: str) -> Command[str]:
    """XADD one frame at `entry_id`; a ResponseError when the id is at or below the last."""
    return Command(
        (("XADD", stream_key(keys, job_id), entry_id, FRAME_FIELD, frame),), lambda r: str(r[0])
    )


def _none(replies: list[Any]) -> None:
    return None


def retain(keys: Keys, job_id: str, ttl_s: int) -> Command[None]:
    """After a terminal frame, the stream and checkpoint live for the retention time."""
    calls = tuple(("EXPIRE", key, ttl_s) for key in _both(keys, job_id))
    return Command(calls, _none)


def _both(keys: Keys, job_id: str) -> Sequence[str]:
    return (stream_key(keys, job_id), checkpoint_key(keys, job_id))
