"""The relay's writes: each batch of admitted frames as one pipeline of per-job commands.

- A frame becomes `XADD <job's stream> <epoch>-<seq> f <frame>`: one key per command, so the
  relay works on Redis Cluster (a script naming many jobs' streams would be refused there,
  CROSSSLOT). Redis refuses an id at or below the stream's last one: a duplicate, or a frame of
  an epoch the reaper fenced out (XSETID). Those refusals are expected and not logged.
- A window frame is first appended to its job's checkpoint (CHECKPOINT, whose keys are that
  one job's), then streamed: the commands run in the order sent on one connection, so whoever
  reads window k in the stream finds it checkpointed. A checkpoint-only window (seq 0) is
  checkpointed and not streamed.
- After a terminal frame, EXPIRE gives the job's stream and checkpoint the retention time.

Commands are encoded as RESP by hand (redis-py's packing costs more than the rest of a
frame's trip) and sent on a redis-py connection of their own; their replies are read through
genq.common.adapters.redis_replies. `send` returns at once; `settle(keep)` reads replies until at
most `keep` batches are unanswered, so the relay can read and validate the next batch while
Redis appends this one.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence

import redis
from redis.connection import Connection

from genq.common.adapters.redis_replies import Replies
from genq.common.frames import WindowData
from genq.common.keys import Keys
from genq.common.store import streams
from genq.workers.relay.admission import Admitted, Checkpoint

log = logging.getLogger("genq.relay")

FENCED = "equal or smaller"  # XADD's refusal of an id at or below the stream's last one
STREAM_KEYS_MAX = 100_000  # stream key names cached; past this many, forget them all
XADD = b"%s$%d\r\n%s\r\n$1\r\nf\r\n$%d\r\n%s\r\n"  # after the head: id, field, frame


def command(*args: bytes) -> bytes:
    """One command as RESP."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


class Writer:
    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: int) -> None:
        self._pool = client.connection_pool
        self._connection: Connection = self._pool.get_connection()
        self._replies = Replies(self._connection)
        self._commands = Commands(keys, ttl_s)
        self._owed: deque[int] = deque()  # replies owed, per batch sent

    def close(self) -> None:
        self._connection.disconnect()  # type: ignore[no-untyped-call]
        self._pool.release(self._connection)

    def send(self, frames: Sequence[Admitted]) -> None:
        """Send the batch's commands, in one write; their replies are read by `settle`."""
        parts = self._commands.encode(frames)
        if parts:
            packed = b"".join(parts)
            self._connection.send_packed_command([packed], check_health=False)  # type: ignore[no-untyped-call]
            self._owed.append(len(parts))

    def settle(self, keep: int = 0) -> None:
        """Read replies until at most `keep` batches are unanswered; log the failures that
        are not expected."""
        while len(self._owed) > keep:
            replies = self._replies.take(self._owed.popleft())
            # Nearly every reply is an entry id: look at each only when the batch's reply
            # types (collected in C) include an error.
            if any(issubclass(kind, redis.ResponseError) for kind in set(map(type, replies))):
                self._log_failures(replies)

    @staticmethod
    def _log_failures(replies: list[object]) -> None:
        for reply in replies:
            if isinstance(reply, redis.ResponseError) and FENCED not in str(reply):
                log.error("relay: write failed: %s", reply)


class Commands:
    """A batch's frames as the commands that write them (RESP, no I/O)."""

    def __init__(self, keys: Keys, ttl_s: int) -> None:
        self._keys = keys
        self._ttl_s = ttl_s
        self._heads: dict[str, bytes] = {}  # job id -> `XADD <its stream>`

    def encode(self, frames: Sequence[Admitted]) -> list[bytes]:
        """One command per element, in the order they must run."""
        parts: list[bytes] = []
        heads = self._heads
        for job_id, entry, _ts, raw, checkpoint, terminal in frames:
            if checkpoint is not None:  # checkpointed before it is readable
                parts.append(self._checkpoint(job_id, checkpoint))
            if entry is None:  # a window sent again for the checkpoint only
                continue
            head = heads.get(job_id) or self._head(job_id)
            parts.append(XADD % (head, len(entry), entry, len(raw), raw))
            if terminal:
                parts += self._retain(job_id)
        return parts

    def _head(self, job_id: str) -> bytes:
        """`XADD <the job's stream>` as RESP, cached per job."""
        if len(self._heads) >= STREAM_KEYS_MAX:
            self._heads.clear()
        stream = streams.stream_key(self._keys, job_id).encode()
        head = self._heads[job_id] = b"*5\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n" % (len(stream), stream)
        return head

    def _checkpoint(self, job_id: str, checkpoint: Checkpoint) -> bytes:
        """The store's CHECKPOINT call, as RESP (a window frame: rare beside token frames)."""
        entry = streams.entry_of(checkpoint.data)
        window = checkpoint.data.window
        call = streams.checkpoint(self._keys, job_id, checkpoint.epoch, window, entry).calls[0]
        return command(*(str(arg).encode() for arg in call))

    def _retain(self, job_id: str) -> list[bytes]:
        """After the terminal frame, the stream and checkpoint live for the retention time."""
        calls = streams.retain(self._keys, job_id, self._ttl_s).calls  # one job's: rare
        return [command(*(str(arg).encode() for arg in call)) for call in calls]


def checkpoint_entry(data: WindowData) -> str:
    """A window as its checkpoint entry stores it (see genq.common.store.streams)."""
    return streams.encode_entry(streams.entry_of(data))
