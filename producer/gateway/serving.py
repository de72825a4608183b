"""`Serving`: the one object behind the gateway's routes, in the shape of vLLM's OpenAI
entrypoints: a route takes it from `app.state.serving` and calls one of its methods. It owns
genq's AsyncClient (submit, stream, cancel and batches of jobs), the gateway's own records in
Redis (`Records`), the files, the batches and the model list. What it raises is answered by
errors.py's one boundary; nothing it does blocks the event loop (a job's checks run in a
thread: see AsyncClient.submit).

A completion's job is submitted, then the gateway records it (its stream's meta, and either
its waiting client or the deadline by which its stream must attach). When the records cannot
be written, the job is cancelled (no one could follow or reattach to it) and the request is
answered with the error, naming the job.

A request that waits for its result is a client of its job: when it disconnects first, the
job gets the reattach grace, as a stream's does (streams.py). Streams and waiting requests
are counted (followers.py): past GENQ_GATEWAY_MAX_STREAMS, 429 before anything is queued.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from dataclasses import asdict
from typing import Any, TypeVar

import anyio
import redis
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse

from genq.common.errors import GenqError, InvalidJob, JobFailed
from genq.common.ids import is_job_id
from genq.common.lifecycle import now_ms
from genq.common.schemas import JobResult
from genq.common.settings import Settings
from genq.common.store import gateway as store
from genq.common.store import streams as stream_store
from genq.common.store import tenants as tenant_store
from genq.common.store.gateway import StreamMeta
from genq.common.tenants import TenantPolicy
from genq.producer.client import AsyncClient
from genq.producer.gateway import chunks, streams
from genq.producer.gateway.auth import Principal
from genq.producer.gateway.batches import Batches
from genq.producer.gateway.completions import JOB_ID_HEADER, ApiRequest
from genq.producer.gateway.errors import ApiError, api_error, shown
from genq.producer.gateway.files import Files
from genq.producer.gateway.followers import (
    CLIENT_GONE,
    SEND_TIMEOUT_S,
    Followers,
    HeldStream,
    pool_size,
)
from genq.producer.gateway.models import ModelList
from genq.producer.gateway.records import Records
from genq.producer.gateway.response_shapes import ResponseRequest
from genq.producer.gateway.responses import Responses
from genq.producer.handles import AsyncJobHandle

POLICY_RETRY_S = 5.0  # how often a gateway started while Redis was down retries its policies

log = logging.getLogger("genq.gateway")

T = TypeVar("T")


class Serving:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.followers = Followers(settings.gateway_max_streams)
        self._client = AsyncClient(settings, pool_size(settings.gateway_max_streams))
        self._records = Records(settings)
        self.models = ModelList(settings)
        self.files = Files(self._records)
        check = self._client.submitter.check
        self.batches = Batches(self._records, self._client, self.files, check)
        self.responses = Responses(self._records, self._client, self.followers)

    async def sweep_forever(self) -> None:
        """Cancel the jobs no client reattached to in time (streams.sweep_forever)."""
        await streams.sweep_forever(self._records, self._client)

    async def publish_policies(self, policies: Mapping[str, TenantPolicy]) -> None:
        """Store the keys file's tenant policies where every producer and worker reads them
        (genq.common.store.tenants). While Redis cannot take them, the gateway serves on (its
        requests answer 503 meanwhile) and tries again every POLICY_RETRY_S."""
        while policies:
            try:
                await self._records.run(tenant_store.write_policies(self._records.keys, policies))
                return
            except GenqError as exc:
                log.warning("tenant policies not stored yet, retrying: %s", exc)
            await asyncio.sleep(POLICY_RETRY_S)

    async def aclose(self) -> None:
        await self._client.aclose()
        await self._records.aclose()

    # -- completions ---------------------------------------------------------------------

    async def complete(self, body: ApiRequest, request: Request, principal: Principal) -> Response:
        """Submit the request's job, as its principal's tenant's; its SSE stream, or its answer
        once it ended. Refused with 429 before the job is queued when the gateway follows its
        most requests."""
        release = self.followers.admit()
        tenant = principal.tenant
        try:
            handle = await self._client.submit(body.spec(), priority=body.priority, tenant=tenant)
            created = int(time.time())
            meta = StreamMeta(body.kind, body.model, created, body.include_usage, tenant)
            await self._record(handle.job_id, meta, body.stream)
            headers = {JOB_ID_HEADER: handle.job_id}
            if body.stream:
                events = streams.followed(self._records, self._client, handle.job_id, meta, None)
                return HeldStream(release, events, headers=headers, send_timeout=SEND_TIMEOUT_S)
            result = await self._result(request, handle)
        except BaseException:
            release()
            raise
        release()
        if result is None:
            return Response(status_code=CLIENT_GONE)
        return JSONResponse(chunks.response(meta, result), headers=headers)

    async def respond(
        self, body: ResponseRequest, request: Request, principal: Principal
    ) -> Response:
        """POST /v1/responses (see responses.py); a response that waits for its job's end is
        a client of it, as a completion's request is (`_result`)."""
        return await self.responses.create(
            body, principal, lambda handle: self._result(request, handle)
        )

    async def _record(self, job_id: str, meta: StreamMeta, streamed: bool) -> None:
        """The gateway's records of a job it just submitted (see the module's docstring)."""
        records = self._records
        within_ms = streams.attach_within_ms(self.settings)
        command = store.start(
            records.keys,
            job_id,
            meta,
            self.settings.job_ttl_s,
            attached=0 if streamed else 1,
            deadline_ms=now_ms() + within_ms if streamed else None,
        )
        try:
            await records.run(command)
        except GenqError as exc:
            with anyio.CancelScope(shield=True):
                undone = await self._undo(job_id)
            error = api_error(exc)
            error.message += f"; job {job_id} {undone}: the gateway could not record it"
            error.headers[JOB_ID_HEADER] = job_id
            raise error from exc

    async def _undo(self, job_id: str) -> str:
        """Cancel a job the gateway could not record; -> what became of it, for the error."""
        try:
            await self._client.cancel(job_id)
        except (GenqError, redis.RedisError) as exc:
            log.warning("job %s: not recorded, and could not be cancelled: %s", job_id, exc)
            return "could not be cancelled either"
        log.warning("job %s: cancelled, the gateway could not record it", job_id)
        return "was cancelled"

    async def _result(self, request: Request, handle: AsyncJobHandle) -> JobResult | None:
        """The job's result; None when the client disconnected first. Either way, the client
        is counted out (streams.leave: the job gets the reattach grace if it runs on)."""
        ended = False
        try:
            result = await _unless_gone(request, handle.result())
            ended = result is not None
            return result
        except JobFailed:
            ended = True
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await streams.leave(self._records, self._client, handle.job_id, ended)

    # -- jobs ----------------------------------------------------------------------------

    async def reattach(
        self, job_id: str, last_event_id: str | None, principal: Principal
    ) -> EventSourceResponse:
        """A job's SSE stream after `last_event_id` (None: from the start); 404 for a job
        of a tenant the principal does not see, as for an unknown one."""
        after = _position(last_event_id)
        records = self._records
        meta = await records.run(store.read(records.keys, job_id)) if is_job_id(job_id) else None
        if meta is None or not principal.sees(meta.tenant):
            raise ApiError(
                404,
                f"no stream for job {shown(job_id)}: not started by a gateway, or its "
                "retention has passed",
                kind="not_found_error",
                param="job_id",
            )
        if after is not None:
            await self._check_position(job_id, after)
        release = self.followers.admit()
        events = streams.followed(records, self._client, job_id, meta, after)
        headers = {JOB_ID_HEADER: job_id}
        return HeldStream(release, events, headers=headers, send_timeout=SEND_TIMEOUT_S)

    async def _check_position(self, job_id: str, after: streams.Position) -> None:
        """400 for an event id past the job's stream: no event of it was ever sent."""
        last = await self._records.run(stream_store.last_id(self._records.keys, job_id))
        if after <= (streams.parse_event_id(last) if last else (0, 0)):
            return
        held = f"its last is {last}" if last else "it holds none yet"
        message = (
            f"last_event_id: {after[0]}-{after[1]} is past the stream of job {job_id} ({held}); "
            "send the id of the last event received"
        )
        raise ApiError(400, message, param="last_event_id")

    async def cancel(self, job_id: str, principal: Principal) -> dict[str, Any]:
        """Cancel a job (see AsyncClient.cancel); 404 for one genq does not keep, or of a
        tenant the principal does not see."""
        if is_job_id(job_id):
            try:
                if principal.sees((await self._client.record(job_id)).tenant):
                    report = await (await self._client.job(job_id, check=False)).cancel()
                    return {
                        "id": job_id,
                        "object": "job.cancel",
                        "cancelled": True,
                        **asdict(report),
                    }
            except InvalidJob:  # not kept (or no longer, since the check)
                pass
        raise ApiError(
            404,
            f"no job {shown(job_id)} (never submitted, or its retention has passed)",
            kind="not_found_error",
            param="job_id",
        )


def _position(text: str | None) -> streams.Position | None:
    if not text:
        return None
    try:
        return streams.parse_event_id(text)
    except ValueError as exc:
        raise ApiError(400, f"last_event_id: {exc}", param="last_event_id") from None


async def _disconnected(request: Request) -> None:
    """Return once the request's client has disconnected (its body was read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_gone(request: Request, work: Awaitable[T]) -> T | None:
    """`work`'s value; None when the client disconnects first (`work` is then cancelled)."""
    done: list[T] = []
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            await _disconnected(request)
            group.cancel_scope.cancel()

        group.start_soon(watch)
        done.append(await work)
        group.cancel_scope.cancel()
    return done[0] if done else None
