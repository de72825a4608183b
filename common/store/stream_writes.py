"""Frames into their jobs' streams and checkpoints at the relay's rate: each batch of frames
as one pipeline of per-job commands, encoded as RESP here (redis-py's packing costs more than
the rest of a frame's trip) and sent on a connection of their own.

- A frame becomes `XADD <job's stream> <epoch>-<seq> f <frame>` (streams.FRAME_FIELD): one
  key per command, so the writes work on Redis Cluster (a script naming many jobs' streams
  would be refused there, CROSSSLOT). Redis refuses an id at or below the stream's last one:
  a duplicate, or a frame of an epoch the reaper fenced out (XSETID). Those refusals are
  expected, and `settle` does not report them.
- A window frame is first appended to its job's checkpoint (streams.checkpoint, whose keys
  are that one job's), then streamed: the commands run in the order sent on one connection,
  so whoever reads window k in the stream finds it checkpointed. A checkpoint-only window
  (no entry id) is checkpointed and not streamed.
- After a terminal frame, streams.retain gives the job's stream and checkpoint the retention
  time.

The key names, the CHECKPOINT script and the entry encodings are common/store/streams.py's;
replies are read in bulk through genq.common.adapters.redis_replies. `send` returns at once;
`settle(keep)` reads replies until at most `keep` batches are unanswered, so the caller can
prepare the next batch while Redis appends this one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import NamedTuple

import redis
from redis.connection import Connection

from genq.common.adapters.redis_replies import Replies
from genq.common.frames import WindowData
from genq.common.store import streams
from genq.common.store.keys import Keys

FENCED = "equal or smaller"  # XADD's refusal of an id at or below the stream's last one
STREAM_KEYS_MAX = 100_000  # stream key names cached; past this many, forget them all
_FIELD = streams.FRAME_FIELD.encode()
# after the head (`XADD <stream>`): id, the frame field, the frame
XADD = b"%s$%d\r\n%s\r\n" + b"$%d\r\n%s\r\n" % (len(_FIELD), _FIELD) + b"$%d\r\n%s\r\n"


class WindowWrite(NamedTuple):
    """A window frame's part for the checkpoint."""

    epoch: int
    data: WindowData


class FrameWrite(NamedTuple):  # a tuple: made once per frame, cheaply
    """A frame to write: where it goes, and its bytes as they came (they go into the stream
    as they are)."""

    job_id: str
    entry: bytes | None  # its stream entry id, `<epoch>-<seq>`; None: for the checkpoint only
    ts_ms: bytes  # when its worker sent it, in digits (not written: the caller's to use)
    raw: bytes
    checkpoint: WindowWrite | None = None  # a window frame's
    terminal: bool = False  # done or error: the job's last frame


def command(*args: bytes) -> bytes:
    """One command as RESP."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


class StreamWriter:
    """Batches of frames written on a connection taken from `client`'s pool (a client
    without decode_responses), until `close`."""

    def __init__(
        self, client: redis.Redis, keys: Keys, ttl_s: int, wait: tuple[int, int] | None = None
    ) -> None:
        self._pool = client.connection_pool
        self._connection: Connection = self._pool.get_connection()
        self._replies = Replies(self._connection)
        self._commands = FrameCommands(keys, ttl_s, wait)
        self._owed: deque[int] = deque()  # replies owed, per batch sent

    def close(self) -> None:
        self._connection.disconnect()  # type: ignore[no-untyped-call]
        self._pool.release(self._connection)

    def send(self, frames: Sequence[FrameWrite]) -> None:
        """Send the batch's commands, in one write; their replies are read by `settle`."""
        parts = self._commands.encode(frames)
        if parts:
            packed = b"".join(parts)
            self._connection.send_packed_command([packed], check_health=False)  # type: ignore[no-untyped-call]
            self._owed.append(len(parts))

    def settle(self, keep: int = 0) -> list[redis.ResponseError]:
        """Read replies until at most `keep` batches are unanswered. The refusals among them
        that are not expected (not a fenced or duplicate entry id)."""
        failures: list[redis.ResponseError] = []
        while len(self._owed) > keep:
            replies = self._replies.take(self._owed.popleft())
            # Nearly every reply is an entry id: look at each only when the batch's reply
            # types (collected in C) include an error.
            if any(issubclass(kind, redis.ResponseError) for kind in set(map(type, replies))):
                failures += _unexpected(replies)
        return failures


def _unexpected(replies: list[object]) -> list[redis.ResponseError]:
    return [r for r in replies if isinstance(r, redis.ResponseError) and FENCED not in str(r)]


class FrameCommands:
    """A batch's frames as the commands that write them (RESP, no I/O). With `wait` (a
    replica count and a timeout in ms: GENQ_REDIS_WAIT_REPLICAS), a batch holding window
    frames checkpoints them all first, then WAITs for the replicas, then streams: a window
    readable in a stream is then checkpointed on the replicas too, and a failover keeps it."""

    def __init__(self, keys: Keys, ttl_s: int, wait: tuple[int, int] | None = None) -> None:
        self._keys = keys
        self._ttl_s = ttl_s
        self._heads: dict[str, bytes] = {}  # job id -> `XADD <its stream>`
        self._wait = [command(b"WAIT", b"%d" % wait[0], b"%d" % wait[1])] if wait else []

    def encode(self, frames: Sequence[FrameWrite]) -> list[bytes]:
        """One command per element, in the order they must run."""
        parts: list[bytes] = []
        checkpoints = parts if not self._wait else []
        heads = self._heads
        for job_id, entry, _ts, raw, checkpoint, terminal in frames:
            if checkpoint is not None:  # checkpointed before it is readable
                checkpoints.append(self._checkpoint(job_id, checkpoint))
            if entry is None:  # a window sent again for the checkpoint only
                continue
            head = heads.get(job_id) or self._head(job_id)
            parts.append(XADD % (head, len(entry), entry, len(raw), raw))
            if terminal:
                parts += self._retain(job_id)
        if checkpoints is parts or not checkpoints:
            return parts
        return [*checkpoints, *self._wait, *parts]

    def _head(self, job_id: str) -> bytes:
        """`XADD <the job's stream>` as RESP, cached per job."""
        if len(self._heads) >= STREAM_KEYS_MAX:
            self._heads.clear()
        stream = streams.stream_key(self._keys, job_id).encode()
        head = self._heads[job_id] = b"*5\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n" % (len(stream), stream)
        return head

    def _checkpoint(self, job_id: str, checkpoint: WindowWrite) -> bytes:
        """The store's CHECKPOINT call, as RESP (a window frame: rare beside token frames)."""
        entry = streams.entry_of(checkpoint.data)
        window = checkpoint.data.window
        call = streams.checkpoint(self._keys, job_id, checkpoint.epoch, window, entry).calls[0]
        return command(*(str(arg).encode() for arg in call))

    def _retain(self, job_id: str) -> list[bytes]:
        """After the terminal frame, the stream and checkpoint live for the retention time."""
        calls = streams.retain(self._keys, job_id, self._ttl_s).calls  # one job's: rare
        return [command(*(str(arg).encode() for arg in call)) for call in calls]
