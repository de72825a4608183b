"""GET /v1/jobs/{job_id}/stream: reattach to a job's SSE after the last event received
(`Last-Event-ID` header, or the `last_event_id` query parameter for EventSource), from any
gateway process; POST /v1/jobs/{job_id}/cancel."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse

from common.keys import check_job_id
from common.store import arun
from common.store import gateway as store
from producer.client import AsyncClient
from producer.gateway import streams
from producer.gateway.completions import JOB_ID_HEADER
from producer.gateway.errors import ApiError

router = APIRouter()


def _position(text: str | None) -> streams.Position | None:
    if not text:
        return None
    try:
        return streams.parse_event_id(text)
    except ValueError as exc:
        raise ApiError(400, f"last_event_id: {exc}", param="last_event_id") from None


@router.get("/v1/jobs/{job_id}/stream", response_model=None)
async def reattach(
    job_id: str,
    request: Request,
    last_event_id: Annotated[str | None, Query()] = None,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    client: AsyncClient = request.app.state.client
    after = _position(last_event_id_header or last_event_id)
    meta = await arun(client.redis, store.read(client.keys, check_job_id(job_id)))
    if meta is None:
        raise ApiError(
            404,
            f"no stream for job {job_id}: not started by a gateway, or its retention has passed",
            kind="not_found_error",
            param="job_id",
        )
    events = streams.followed(client, job_id, meta, after)
    return EventSourceResponse(events, headers={JOB_ID_HEADER: job_id})


@router.post("/v1/jobs/{job_id}/cancel")
async def cancel(job_id: str, request: Request) -> dict[str, Any]:
    client: AsyncClient = request.app.state.client
    report = await client.cancel(check_job_id(job_id))
    return {"id": job_id, "object": "job.cancel", "cancelled": True, **asdict(report)}
