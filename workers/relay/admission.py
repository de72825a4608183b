"""Which messages the relay moves: only valid frames of jobs that exist.

Anyone who may PUBLISH on a token channel can send the relay anything. Every message is
validated whole (header and data) before it is moved; one that is not a frame, or whose job
has no record, is counted (`genq_relay_dropped_frames_total{reason}`), logged once per job and
reason (never its text above debug level), and dropped: it reaches neither a stream nor a
checkpoint.

Validation is `genq.common.frames.parse_frame`, one pydantic TypeAdapter over the frame union
(Rust): the same check every reader makes, so whatever the relay moves, readers can read. A
token frame spelled exactly as workers write it is recognized faster by its bytes
(genq.workers.relay.shape: a strict subset of what parse_frame accepts); any other goes to
parse_frame.

Jobs are looked up in batches: one pipelined EXISTS per batch for the jobs not seen lately,
so a running job costs one lookup every KNOWN_JOB_S, not one per frame.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence

import redis

from genq.common.frames import FrameType, WindowFrame, is_json_error, parse_frame
from genq.common.store import jobs, run_all
from genq.common.store.keys import Keys
from genq.common.store.stream_writes import FrameWrite, WindowWrite
from genq.workers.relay.metrics import Drop, RelayStats
from genq.workers.relay.shape import canonical_tokens

log = logging.getLogger("genq.relay")

KNOWN_JOB_S = 30.0  # a job seen to exist is not looked up again for this long
KNOWN_JOBS_MAX = 100_000  # past this many, forget them all (a bound on memory)
WARNED_MAX = 10_000  # (job, reason) pairs logged already; past this many, forget them
_NAMED_JOB = re.compile(rb'"job_id"\s*:\s*"([0-9a-f]{32})"')  # names a bad frame's job in the log
NO_JOB_NAMED = "-"


_TERMINAL = {FrameType.DONE, FrameType.ERROR}


_new = tuple.__new__


class Admission:
    def __init__(self, client: redis.Redis, keys: Keys, stats: RelayStats) -> None:
        self._redis = client
        self._keys = keys
        self._stats = stats
        self._known: dict[str, float] = {}  # job id -> until when it is known to exist
        self._warned: set[tuple[str, Drop]] = set()

    def admit(self, messages: Sequence[bytes]) -> list[FrameWrite]:
        """The valid frames of existing jobs among `messages`, in order."""
        valid: list[FrameWrite] = []
        append = valid.append
        for raw, match in zip(messages, canonical_tokens(messages), strict=True):
            if match is not None:  # the common case, inline (and no Python-level __new__)
                job, epoch, seq, ts_ms = match.groups()
                append(
                    _new(FrameWrite, (job.decode(), epoch + b"-" + seq, ts_ms, raw, None, False))
                )
            elif (frame := self._validate(raw)) is not None:
                append(frame)
        missing = self._missing({frame.job_id for frame in valid})
        if not missing:
            return valid
        for job_id in missing:
            count = sum(frame.job_id == job_id for frame in valid)
            self.drop(Drop.NO_JOB, job_id, "the job has no record", count)
        return [frame for frame in valid if frame.job_id not in missing]

    def _validate(self, raw: bytes) -> FrameWrite | None:
        try:
            frame = parse_frame(raw)
        except ValueError as exc:  # pydantic's ValidationError, or undecodable bytes
            self._refuse(raw, exc)
            return None
        window = frame.data if isinstance(frame, WindowFrame) else None
        if frame.seq == 0 and window is None:  # only a window may be sent for the checkpoint
            self.drop(Drop.SEQ, frame.job_id, f"seq 0 on a {frame.type} frame")
            return None
        entry = b"%d-%d" % (frame.epoch, frame.seq) if frame.seq else None
        checkpoint = WindowWrite(frame.epoch, window) if window is not None else None
        terminal = frame.type in _TERMINAL
        return FrameWrite(frame.job_id, entry, b"%d" % frame.ts_ms, raw, checkpoint, terminal)

    def _refuse(self, raw: bytes, exc: ValueError) -> None:
        errors = getattr(exc, "errors", None)
        if errors is None or is_json_error(exc):  # type: ignore[arg-type]
            reason, why = Drop.JSON, "not JSON"
        else:  # where and what, never the input itself: it may carry a prompt's text
            first = errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in first["loc"])[:80]
            reason, why = Drop.SCHEMA, f"not a valid frame: {where}: {first['type']}"
        named = _NAMED_JOB.search(raw[:200])
        self.drop(reason, named[1].decode() if named else NO_JOB_NAMED, why)
        log.debug("relay: dropped message (first bytes): %r", raw[:200])

    def drop(self, reason: Drop, job_id: str, why: str, count: int = 1) -> None:
        """Count a dropped message; say so in the log the first time for its job."""
        self._stats.dropped[reason] += count
        if (job_id, reason) in self._warned:
            return
        if len(self._warned) >= WARNED_MAX:
            self._warned.clear()
        self._warned.add((job_id, reason))
        log.warning("relay: dropped a message for job %s (%s): %s", job_id, reason.value, why)

    def _missing(self, job_ids: set[str]) -> set[str]:
        """Those of `job_ids` that have no record, looked up in one round trip for the jobs
        not seen lately."""
        now = time.monotonic()
        unknown = [job_id for job_id in job_ids if self._known.get(job_id, 0.0) < now]
        if not unknown:
            return set()
        found = run_all(self._redis, [jobs.exists(self._keys, job_id) for job_id in unknown])
        if len(self._known) + len(unknown) > KNOWN_JOBS_MAX:
            self._known.clear()
        missing = set()
        for job_id, exists in zip(unknown, found, strict=True):
            if exists:
                self._known[job_id] = now + KNOWN_JOB_S
            else:
                missing.add(job_id)
        return missing
