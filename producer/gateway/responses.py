"""`Responses`: the Responses API (`/v1/responses`) over genq's jobs. A response is a job; its
id is `resp_` + the job's id, and the gateway keeps its echoed fields and tenant beside the
job, for as long as the job (common/store/responses.py). Its shapes are response_shapes.py's,
its events response_events.py's.

- `background: true`: the job is queued and the `queued` object answered at once; the job
  runs to its end whether or not a client follows it. A client follows it with
  `GET /v1/responses/{id}?stream=true&starting_after=N`, from any gateway, at any time while
  it is kept: the events after N are sent, then the job's as they come.
- Otherwise the response is a client of its job as a chat completion is (streams.py): a
  streamed one gets the reattach grace when its client leaves before the end, and its job is
  cancelled when no client attached within ATTACH_WITHIN_S + GENQ_REATTACH_GRACE_S of its
  submit (a client lost before the first event); one that waits for its object is counted as
  a client until answered.
- Cancel ends the job (its text so far is kept: `cancelled`) and answers the final object; an
  ended response's cancel answers its object as it is. Delete cancels a job still running and
  forgets the response (then 404).
- A response is visible only to its tenant: another's answers exactly the unknown-id 404.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import redis
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from sse_starlette import ServerSentEvent

from genq.common.errors import GenqError, InvalidJob, JobFailed
from genq.common.frames import parse_frame
from genq.common.lifecycle import now_ms
from genq.common.schemas import JobRecord, JobResult, JobState
from genq.common.store import responses as store
from genq.common.store import streams as stream_store
from genq.common.store.responses import ResponseRecord
from genq.producer.client import AsyncClient
from genq.producer.core import StreamState
from genq.producer.gateway import response_shapes as shapes
from genq.producer.gateway import streams
from genq.producer.gateway.auth import Principal
from genq.producer.gateway.completions import JOB_ID_HEADER
from genq.producer.gateway.errors import ApiError, api_error, not_found
from genq.producer.gateway.followers import CLIENT_GONE, SEND_TIMEOUT_S, Followers, HeldStream
from genq.producer.gateway.records import Records
from genq.producer.gateway.response_events import Event, ResponseEvents
from genq.producer.gateway.response_shapes import ResponseRequest
from genq.producer.handles import AsyncJobHandle

CANCEL_WAIT_S = 10.0  # a cancel answers once the job ended, or after this with it as it is

log = logging.getLogger("genq.gateway")

Wait = Callable[[AsyncJobHandle], Awaitable[JobResult | None]]


class Responses:
    def __init__(self, records: Records, client: AsyncClient, followers: Followers) -> None:
        self._records = records
        self._client = client
        self._followers = followers

    async def create(self, body: ResponseRequest, principal: Principal, wait: Wait) -> Response:
        """Submit the response's job; its events, its `queued` object (background), or its
        object once it ended (`wait`: the job's result, None when the client left first)."""
        spec = body.spec()  # 400 before anything is queued
        follows = body.stream or not body.background
        release = self._followers.admit() if follows else _nothing
        try:
            handle = await self._client.submit(
                spec, priority=body.priority, tenant=principal.tenant
            )
            job_id = handle.job_id
            record = body.record(spec, principal.tenant, int(time.time()))
            await self._save(job_id, record, body.stream)
            headers = {JOB_ID_HEADER: job_id}
            if body.stream:
                return self._held(job_id, record, -1, release, headers)
            if body.background:
                return JSONResponse(shapes.running(job_id, record, "queued", ""), headers=headers)
            gone = await _waited(wait, handle)
        except BaseException:
            release()
            raise
        release()
        if gone:
            return Response(status_code=CLIENT_GONE)
        return JSONResponse(await self._object(job_id, record), headers=headers)

    async def _save(self, job_id: str, record: ResponseRecord, streamed: bool) -> None:
        """The response's record; its job is cancelled when it cannot be written."""
        keys, settings = self._records.keys, self._records.settings
        client_waits = not record.background and not streamed
        deadline = None
        if streamed and not record.background:
            deadline = now_ms() + streams.attach_within_ms(settings)
        command = store.create(
            keys, job_id, record, settings.job_ttl_s, int(client_waits), deadline
        )
        try:
            await self._records.run(command)
        except GenqError:
            with anyio.CancelScope(shield=True):
                await self._quietly_cancel(job_id)
            raise

    async def retrieve(
        self,
        ident: str,
        principal: Principal,
        stream: bool,
        starting_after: int | None,
        last_event_id: int | None = None,
    ) -> dict[str, Any] | HeldStream:
        """The response object as it is now: queued, in progress (its text so far) or ended.
        `stream`: its events after `starting_after` (else `last_event_id`, a browser's
        EventSource reconnecting; neither: all of them), then its new ones to its end;
        following a response that is not background counts as its client."""
        job_id, record = await self._find(ident, principal)
        if not stream:
            return await self._object(job_id, record)
        after = next((n for n in (starting_after, last_event_id) if n is not None), -1)
        release = self._followers.admit()
        return self._held(job_id, record, after, release, {JOB_ID_HEADER: job_id})

    async def cancel(self, ident: str, principal: Principal) -> dict[str, Any]:
        """End the response's job and answer its final object (as it is, once ended)."""
        job_id, record = await self._find(ident, principal)
        job = await self._job(ident, job_id)
        if not job.state.terminal:
            await self._client.cancel(job_id)
            handle = await self._client.job(job_id, check=False)
            with contextlib.suppress(GenqError):  # failed, or not ended: the object says
                await handle.result(timeout=CANCEL_WAIT_S)
        return await self._object(job_id, record)

    async def delete(self, ident: str, principal: Principal) -> dict[str, Any]:
        """Forget the response (its job is cancelled if it still runs)."""
        job_id, _record = await self._find(ident, principal)
        await self._quietly_cancel(job_id)
        await self._records.run(store.delete(self._records.keys, job_id))
        return {"id": ident, "object": "response.deleted", "deleted": True}

    # -- helpers -------------------------------------------------------------------------

    async def _find(self, ident: str, principal: Principal) -> tuple[str, ResponseRecord]:
        """The response's job id and record; 404 for one unknown or not the principal's."""
        job_id = shapes.job_of(ident)
        keys = self._records.keys
        record = None if job_id is None else await self._records.run(store.read(keys, job_id))
        if job_id is None or record is None or not principal.sees(record.tenant):
            raise _not_found(ident)
        return job_id, record

    async def _job(self, ident: str, job_id: str) -> JobRecord:
        try:
            return await self._client.record(job_id)
        except InvalidJob:  # the job's retention passed before the response's
            raise _not_found(ident) from None

    async def _object(self, job_id: str, record: ResponseRecord) -> dict[str, Any]:
        job = await self._job(shapes.response_id(job_id), job_id)
        if job.result is not None:
            return shapes.finished(job_id, record, job.result)
        if job.state.terminal:
            text = await self._text(job_id)
            code = job.error_code or job.state.value
            return shapes.failed(job_id, record, text, code, job.error or "the job failed")
        status = "queued" if job.state is JobState.QUEUED and job.epoch == 0 else "in_progress"
        return shapes.running(job_id, record, status, await self._text(job_id))

    async def _text(self, job_id: str) -> str:
        """The job's text so far, folded from its stream as its events fold it."""
        state = StreamState(job_id)
        for _entry, raw in await self._records.run(
            stream_store.raw_frames(self._records.keys, job_id)
        ):
            try:
                state.apply(parse_frame(raw))
            except ValidationError:  # not a frame genq wrote: skipped, as a reader does
                continue
        return state.shown_text(eager=True)

    def _held(
        self,
        job_id: str,
        record: ResponseRecord,
        after: int,
        release: Callable[[], None],
        headers: dict[str, str],
    ) -> HeldStream:
        sent = self._events(job_id, record, after)
        if not record.background:
            sent = streams.counted(self._records, self._client, job_id, sent)
        return HeldStream(release, sent, headers=headers, send_timeout=SEND_TIMEOUT_S)

    async def _events(
        self, job_id: str, record: ResponseRecord, after: int
    ) -> AsyncIterator[ServerSentEvent]:
        """The response's events numbered past `after`, to its end."""
        mapper = ResponseEvents(job_id, record, unsent_through=after)
        for event in mapper.start():
            if event["sequence_number"] > after:
                yield _sse(event)
        stream = (await self._client.job(job_id, check=False)).stream()
        try:
            async for frame in stream:
                for event in mapper.render(frame, stream.state):
                    if event["sequence_number"] > after:
                        yield _sse(event)
                if mapper.ended:
                    return
        except GenqError as exc:  # Redis lost past GENQ_REDIS_RETRY_S: say so, and end
            error = api_error(exc)
            yield _sse(mapper.error(error.code or error.kind, error.message))
        finally:
            await stream.aclose()

    async def _quietly_cancel(self, job_id: str) -> None:
        try:
            await self._client.cancel(job_id)
        except (GenqError, redis.RedisError) as exc:
            log.warning("job %s: could not be cancelled: %s", job_id, exc)


def _nothing() -> None:
    return None


async def _waited(wait: Wait, handle: AsyncJobHandle) -> bool:
    """Wait for the job's end; -> True when the client left first."""
    try:
        return await wait(handle) is None
    except JobFailed:  # the object says it failed
        return False


def _sse(event: Event) -> ServerSentEvent:
    data = json.dumps(event, separators=(",", ":"))
    return ServerSentEvent(data=data, event=event["type"], id=str(event["sequence_number"]))


def _not_found(ident: str) -> ApiError:
    return not_found("Response object", ident, "response_id")
