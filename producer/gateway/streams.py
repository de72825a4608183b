"""SSE streams that survive: a job's events from its durable stream (chunks.Renderer), sent
after the client's last event id, and the attach count that decides when a job nobody follows
is cancelled.

A client reattaches after the last event it received (`Last-Event-ID`): the events after it
are sent, and none before. At the job's last event, the stream sends that event's last payload
again (`[DONE]`, or the error of a job that failed) and ends, so that a client that reconnects
after the end, as a browser's EventSource does, is told the stream is over. An id past the
stream's last entry was never sent: the reattach is refused with 400 (see serving.py).

A client that disconnects does not cancel its job at once: when the last client of a job
leaves before its end, the job gets a deadline GENQ_REATTACH_GRACE_S away (0: cancelled at
once) in the detach index (common/store/gateway.py); a client that reattaches, from any
gateway process, takes it off. A request that waits for its result without streaming counts
as a client of its job too, from its submit until it is answered or its client disconnects.
Every gateway process sweeps due deadlines (`sweep_forever`, started in the app's lifespan)
and cancels the jobs that still have no client. A gateway killed outright (SIGKILL) never
counts its clients out: their jobs are then not cancelled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

import anyio
import redis
from sse_starlette import ServerSentEvent

from genq.common.errors import GenqError, InvalidJob
from genq.common.frames import Frame
from genq.common.settings import Settings
from genq.common.store import gateway as store
from genq.common.store.gateway import StreamMeta
from genq.producer.client import AsyncClient
from genq.producer.gateway.chunks import Payload, Renderer
from genq.producer.gateway.errors import api_error, body, shown
from genq.producer.gateway.records import Records

SWEEP_INTERVAL_S = 0.25  # how often each gateway process looks for due deadlines
SWEEP_BATCH = 100  # due jobs handled per look
# A new stream's job is counted as abandoned until its response starts and attaches (ms
# later), then GENQ_REATTACH_GRACE_S: a client gone before its first byte never attaches.
ATTACH_WITHIN_S = 2.0

log = logging.getLogger("genq.gateway")

Position = tuple[int, int]  # an event id `<epoch>-<seq>` as numbers


def parse_event_id(text: str) -> Position:
    """`<epoch>-<seq>`; ValueError when it is not one."""
    epoch, sep, seq = text.partition("-")
    if not sep or not epoch.isdigit() or not seq.isdigit():
        raise ValueError(f"an event id is EPOCH-SEQ (two integers), got {shown(text)!r}")
    return int(epoch), int(seq)


def _sent_before(frame: Frame, after: Position | None) -> bool:
    """The client has this frame's events: it is at or before its last event id. A terminal
    made from the job's record (seq 0, no stream entry) is never taken as sent."""
    return after is not None and frame.seq > 0 and (frame.epoch, frame.seq) <= after


def _event(payload: Payload, event_id: str) -> ServerSentEvent:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return ServerSentEvent(data=data, id=event_id)


def error_event(exc: BaseException, event_id: str) -> ServerSentEvent:
    """A failure after the response started: OpenAI's error body, as the stream's last event."""
    error = api_error(exc)
    return _event(body(error.message, error.kind, error.param, error.code), event_id)


async def events(
    client: AsyncClient, job_id: str, meta: StreamMeta, after: Position | None
) -> AsyncIterator[ServerSentEvent]:
    """The job's SSE events after `after` (None: from the start), to its end."""
    renderer = Renderer(job_id, meta)
    stream = (await client.job(job_id, check=False)).stream()
    last = "0-0"
    try:
        async for frame in stream:
            last = f"{frame.epoch}-{frame.seq}" if frame.seq > 0 else last
            payloads = renderer.render(frame, stream.state)
            if not _sent_before(frame, after):
                for payload in payloads:
                    yield _event(payload, last)
            elif renderer.ended and payloads:  # the client's last event is the job's last
                yield _event(payloads[-1], last)
            if renderer.ended:
                return
    except GenqError as exc:  # Redis lost past GENQ_REDIS_RETRY_S: say so, in OpenAI's shape
        yield error_event(exc, last)
    finally:
        await stream.aclose()


def attach_within_ms(settings: Settings) -> int:
    """How long a new stream's job waits for its client to attach (see ATTACH_WITHIN_S)."""
    return int((settings.reattach_grace_s + ATTACH_WITHIN_S) * 1000)


async def followed(
    records: Records, client: AsyncClient, job_id: str, meta: StreamMeta, after: Position | None
) -> AsyncIterator[ServerSentEvent]:
    """`events`, counted as one attached client of the job while it is sent."""
    async for event in counted(records, client, job_id, events(client, job_id, meta, after)):
        yield event


async def counted(
    records: Records, client: AsyncClient, job_id: str, source: AsyncIterator[ServerSentEvent]
) -> AsyncIterator[ServerSentEvent]:
    """`source`'s events, counted as one attached client of the job while they are sent."""
    try:
        await records.run(store.attach(records.keys, job_id))
    except GenqError as exc:
        yield error_event(exc, "0-0")
        return
    ended = False
    try:
        async for event in source:
            yield event
        ended = True
    finally:
        with anyio.CancelScope(shield=True):  # the client is gone: this must still run
            await leave(records, client, job_id, ended)


async def leave(records: Records, client: AsyncClient, job_id: str, ended: bool) -> None:
    """A client of the job left (`ended`: after the job's end). The last one to leave before
    the end gives the job GENQ_REATTACH_GRACE_S to be reattached, or cancels it at once."""
    grace_s = records.settings.reattach_grace_s
    try:
        left = await records.run(store.detach(records.keys, job_id))
        if left > 0 or ended:
            return
        if grace_s == 0:
            await _cancel(client, job_id)
            return
        deadline = time.time_ns() // 10**6 + int(grace_s * 1000)
        await records.run(store.set_deadline(records.keys, job_id, deadline))
    except (GenqError, redis.RedisError) as exc:
        log.warning("job %s: could not count its client out: %s", job_id, exc)


async def _cancel(client: AsyncClient, job_id: str) -> None:
    try:
        await client.cancel(job_id)
        log.info("job %s: cancelled, no client reattached", job_id)
    except InvalidJob:  # no longer kept: nothing to cancel
        pass


async def sweep(records: Records, client: AsyncClient) -> int:
    """Cancel the jobs whose reattach deadline passed with no client attached; -> how many."""
    now = time.time_ns() // 10**6
    cancelled = 0
    for job_id in await records.run(store.due(records.keys, now, SWEEP_BATCH)):
        if await records.run(store.claim(records.keys, job_id)):
            await _cancel(client, job_id)
            cancelled += 1
    return cancelled


async def sweep_forever(records: Records, client: AsyncClient) -> None:
    """`sweep` every SWEEP_INTERVAL_S, for as long as the gateway runs; Redis trouble is
    logged and the next sweep tries again."""
    while True:
        try:
            await sweep(records, client)
        except (GenqError, redis.RedisError) as exc:
            log.warning("reattach sweep failed: %s", exc)
        await asyncio.sleep(SWEEP_INTERVAL_S)
