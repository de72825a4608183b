"""The relay: live frames become replayable streams, windows become checkpoints, and jobs
whose worker died are resumed elsewhere. Run it with `genq relay`
(or `python -m genq.workers.relay`).

- It pattern-subscribes to every job's token channel, or with GENQ_RELAY_SHARD `k/n` to
  share k of n (by the job id's first character: genq.common.store.streams.channel_pattern),
  so that n relays share the work, each job's frames moved by one of them. Only valid frames
  of existing jobs are moved (genq.workers.relay.admission): anything else that arrives is
  counted, logged once per job and dropped, and never stops the relay.
- It writes each frame to the job's stream with entry id `<epoch>-<seq>`: one XADD per frame,
  a batch per pipeline, one job's keys per command (Redis Cluster ready:
  genq.common.store.stream_writes).
  Redis refuses an id not above the stream's last one, so a second relay or a redelivered
  frame adds nothing, and a frame from an older epoch than the stream has seen is fenced out.
- A `window` frame is appended to the job's checkpoint (window k only as entry k, only from the
  current epoch) before the frame enters the stream: whoever reads window k in the stream finds
  it checkpointed. A window frame with seq 0 is a window its worker sent again because the
  checkpoint fell behind (a relay outage lost the first one): it is checkpointed, not streamed.
- After a terminal frame the job's stream and checkpoint get the retention TTL.
- Prometheus metrics (genq.workers.relay.metrics) on GENQ_RELAY_METRICS_PORT: frames moved, lag,
  reaper actions, queue depths.
- The reaper finds lapsed leases, bumps the job's epoch and requeues it (at the job's
  priority), or fails it when its attempts are spent. Two relays never both act on one lease
  (one script decides). It also ends queued jobs whose expiry time has passed, so that status
  and waiting readers see `expired` even while no worker is free to look at them.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType as StackFrame

import redis

from genq.common.connection import connect, connect_bytes
from genq.common.dispatch import Dispatch, Dispatcher
from genq.common.errors import ErrorCode
from genq.common.frames import ErrorData, ErrorFrame
from genq.common.handover import settings_from_environment
from genq.common.lifecycle import end_unstarted
from genq.common.logs import configure, fields
from genq.common.routing import queue_device
from genq.common.schemas import GenerateRequest, JobState
from genq.common.settings import Settings
from genq.common.store import channels, jobs, leases, run, streams
from genq.common.store.channels import PatternMessages
from genq.common.store.keys import Keys
from genq.common.store.leases import ReapAction
from genq.common.store.stream_writes import StreamWriter
from genq.workers.relay.admission import Admission
from genq.workers.relay.metrics import RelayStats, serve_relay

log = logging.getLogger("genq.relay")

BATCH_FRAMES = 1000  # frames written per pipeline at most
# Batches sent whose replies are not read yet, while frames keep coming. Two, not one: on a
# busy machine Redis may not have had the CPU to append the last batch by the time the next
# is sent; with one, the relay waited for it (86% of a core busy under the benchmark's load,
# 90% with two).
IN_FLIGHT = 2
WAIT_S = 0.1  # longest wait for a first frame before the reaper gets a turn
RECONNECT_S = 1.0
REAP_BATCH = 100
# The cyclic collector's first threshold in the relay process. Each frame leaves a list
# (hiredis's pmessage) and a tuple (FrameWrite) alive for a batch; at Python's default (700) the
# collector ran every few hundred frames, promoted batches to older generations and so ran
# full collections too: about a tenth of the relay's CPU (perf). Nothing on the hot path
# makes a cycle; the rare one (a traceback) still goes, a little later.
GC_THRESHOLD = 100_000


class Relay:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        # Frames are moved as bytes: no decoding on the way through.
        self.redis = connect_bytes(settings)
        self._text = connect(settings)
        self._dispatcher = Dispatcher(settings, main="genq-relay")
        self.moved = 0
        self.stats = RelayStats()
        self.admission = Admission(self.redis, self.keys, self.stats)
        self._writes: StreamWriter | None = None  # connected on first use, again after an outage

    def run(self, stop: threading.Event) -> None:
        """Move frames and reap leases until `stop`; a lost connection is re-established
        (frames published meanwhile are missing from the streams: readers mend such holes)."""
        next_reap = 0.0
        while not stop.is_set():
            try:
                with self._subscription() as frames:
                    while not stop.is_set():
                        next_reap = self._turn(frames, next_reap)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.error("relay: lost Redis (%s); reconnecting", exc)
                stop.wait(RECONNECT_S)
            finally:
                self._close_writer()

    def _turn(self, frames: PatternMessages, next_reap: float) -> float:
        """Move the frames that arrived; reap when it is time. The next time to reap."""
        batch = frames.read(WAIT_S, BATCH_FRAMES)
        if batch:  # read older batches' replies while Redis appends this one
            self.send(batch)
            self.settle(IN_FLIGHT)
        else:
            self.settle(0)
            self.stats.idle()
        now = time.monotonic()
        self.stats.tick(now, self.moved)
        if now < next_reap:
            return next_reap
        self.reap()
        self.expire()
        return time.monotonic() + self.settings.reap_interval_s

    @contextmanager
    def _subscription(self) -> Iterator[PatternMessages]:
        pattern = streams.channel_pattern(self.keys, *self.settings.relay_share)
        frames = channels.psubscribe(self.redis, pattern)
        try:
            log.info("relay: moving frames of %s, reaping leases", pattern)
            yield frames
        finally:
            frames.close()

    def write(self, messages: Sequence[bytes]) -> None:
        """Move the batch's valid frames (the rest are dropped: admission) and wait until
        Redis has answered."""
        self.send(messages)
        self.settle(0)

    def send(self, messages: Sequence[bytes]) -> None:
        """Send the batch's valid frames to Redis in one pipeline (common/store/stream_writes);
        their replies are read later (`settle`)."""
        admitted = self.admission.admit(messages)
        if not admitted:
            return
        self._writer().send(admitted)
        self.moved += len(admitted)
        oldest = int(admitted[0].ts_ms)
        if oldest:  # how far behind the workers we run
            self.stats.wrote(oldest)

    def settle(self, keep: int) -> None:
        """Read replies until at most `keep` batches sent are unanswered."""
        if self._writes is not None:
            for failure in self._writes.settle(keep):
                log.error("relay: write failed: %s", failure)

    def _writer(self) -> StreamWriter:
        if self._writes is None:
            settings = self.settings
            wait = (settings.redis_wait_replicas, settings.redis_wait_ms)
            self._writes = StreamWriter(
                self.redis, self.keys, settings.job_ttl_s, wait if wait[0] else None
            )
        return self._writes

    def _close_writer(self) -> None:
        if self._writes is not None:
            self._writes.close()
            self._writes = None

    def reap(self) -> None:
        now = time.time_ns() // 1_000_000
        for job_id in run(self._text, leases.lapsed(self.keys, now, REAP_BATCH)):
            record = run(self._text, jobs.read(self.keys, job_id))
            batch_id = record.batch_id if record is not None else ""
            model = record.spec.model if record is not None else ""
            grace_ms = int(self.settings.requeue_grace_s * 1000)
            ttl_s, attempts = self.settings.job_ttl_s, self.settings.max_attempts
            command = leases.reap(self.keys, job_id, batch_id, now, attempts, grace_ms, ttl_s)
            reaped = run(self._text, command)
            if reaped.action is ReapAction.REQUEUE:
                request = GenerateRequest(job_id=job_id, epoch=reaped.epoch, batch_id=batch_id)
                self._requeue(request, reaped.queue, reaped.priority, model)
            elif reaped.action is ReapAction.FAILED:
                self._fail(job_id, reaped.epoch, reaped.attempts)

    def _requeue(self, request: GenerateRequest, queue: str, priority: int, name: str) -> None:
        log.warning(
            "job lost its worker: resuming it",
            extra=fields(job=request.job_id, epoch=request.epoch, model=name, queue=queue),
        )
        self._dispatcher.send([Dispatch(request, queue, priority, name)])
        self.stats.requeues[name, queue_device(queue)] += 1

    def expire(self) -> None:
        """End the queued jobs whose expiry time has passed (a started job never expires)."""
        now = time.time_ns() // 1_000_000
        for job_id in run(self._text, leases.due_expiries(self.keys, now, REAP_BATCH)):
            ttl_s = self.settings.job_ttl_s
            if end_unstarted(self._text, self.keys, ttl_s, job_id, JobState.EXPIRED):
                log.info("job expired before it started", extra=fields(job=job_id))
                self.stats.expired += 1
            else:  # started, ended or gone: nothing to expire
                run(self._text, leases.drop_expiry(self.keys, job_id))

    def _fail(self, job_id: str, epoch: int, attempts: int) -> None:
        message = f"the job ran out of attempts: its worker died {attempts} times"
        log.error("job failed: %s", message, extra=fields(job=job_id, epoch=epoch))
        self.stats.failed += 1
        data = ErrorData(code=ErrorCode.ATTEMPTS_EXHAUSTED, message=message, retryable=True)
        frame = ErrorFrame(job_id=job_id, epoch=epoch, seq=1, data=data)
        run(
            self._text,
            channels.publish(streams.channel(self.keys, job_id), frame.model_dump_json()),
        )


def main() -> None:
    settings = settings_from_environment()  # `genq relay`'s plan, else GENQ_* variables
    configure(settings.log_format, {"relay": f"relay@{socket.gethostname()}:{os.getpid()}"})
    stop = threading.Event()

    def _stop(signum: int, frame: StackFrame | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("relay: Redis at %s", settings.redacted_redis_url)
    relay = Relay(settings)
    gc.freeze()  # what startup made lives as long as the process: no collection looks at it
    gc.set_threshold(GC_THRESHOLD)
    endpoint = serve_relay(relay, settings)
    if endpoint is not None:
        log.info("relay: metrics at %s", endpoint.url)
    relay.run(stop)
    if endpoint is not None:
        endpoint.stop()
    log.info("relay: stopped")


if __name__ == "__main__":
    main()
