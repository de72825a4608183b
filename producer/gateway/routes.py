"""The gateway's /v1 routes. Each takes the one `Serving` (serving.py) from the app's state
and returns what it answers; errors are errors.py's. Every route needs an API key (auth.py),
and one that touches a job, file or batch is handed its principal (`Who`): another tenant's
id answers as an unknown one does."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response
from sse_starlette import EventSourceResponse

from genq.producer.gateway import auth, batches, files
from genq.producer.gateway.auth import Principal
from genq.producer.gateway.batches import CreateBatch
from genq.producer.gateway.completions import ChatRequest, CompletionRequest
from genq.producer.gateway.response_shapes import ResponseRequest
from genq.producer.gateway.serving import Serving

router = APIRouter()


def _serving(request: Request) -> Serving:
    serving: Serving = request.app.state.serving
    return serving


Serve = Annotated[Serving, Depends(_serving)]
Who = Annotated[Principal, Depends(auth.principal)]  # whose work the request may see


@router.get("/v1/models")
async def list_models(serving: Serve) -> dict[str, Any]:
    return await serving.models.all()


@router.get("/v1/models/{model}")
async def get_model(model: str, serving: Serve) -> dict[str, Any]:
    return await serving.models.get(model)


@router.post("/v1/completions", response_model=None)
async def completions(
    body: CompletionRequest, request: Request, serving: Serve, who: Who
) -> Response:
    return await serving.complete(body, request, who)


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatRequest, request: Request, serving: Serve, who: Who
) -> Response:
    return await serving.complete(body, request, who)


@router.post("/v1/responses", response_model=None)
async def create_response(
    body: ResponseRequest, request: Request, serving: Serve, who: Who
) -> Response:
    return await serving.respond(body, request, who)


@router.get("/v1/responses/{response_id}", response_model=None)
async def get_response(
    response_id: str,
    serving: Serve,
    who: Who,
    stream: bool = False,
    starting_after: Annotated[int | None, Query(ge=0)] = None,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0)] = None,
) -> Response | dict[str, Any]:
    """The response object; with `stream=true`, its events after `starting_after` (or the
    `Last-Event-ID` header: a browser's EventSource reconnecting)."""
    return await serving.responses.retrieve(response_id, who, stream, starting_after, last_event_id)


@router.post("/v1/responses/{response_id}/cancel")
async def cancel_response(response_id: str, serving: Serve, who: Who) -> dict[str, Any]:
    return await serving.responses.cancel(response_id, who)


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, serving: Serve, who: Who) -> dict[str, Any]:
    return await serving.responses.delete(response_id, who)


@router.get("/v1/jobs/{job_id}/stream", response_model=None)
async def reattach(
    job_id: str,
    serving: Serve,
    who: Who,
    last_event_id: Annotated[str | None, Query()] = None,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    """Reattach after the last event received: the `Last-Event-ID` header, or the
    `last_event_id` query parameter (a browser's EventSource)."""
    return await serving.reattach(job_id, last_event_id_header or last_event_id, who)


@router.post("/v1/jobs/{job_id}/cancel")
async def cancel(job_id: str, serving: Serve, who: Who) -> dict[str, Any]:
    return await serving.cancel(job_id, who)


@router.post("/v1/files")
async def create_file(request: Request, serving: Serve, who: Who) -> dict[str, Any]:
    return await serving.files.create(request, who)  # the multipart body, read up to its limit


@router.get("/v1/files")
async def list_files(
    serving: Serve,
    who: Who,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=files.LIST_MAX)] = files.LIST_MAX,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> dict[str, Any]:
    return await serving.files.page(who, purpose, limit, order == "desc", after)


@router.get("/v1/files/{file_id}")
async def get_file(file_id: str, serving: Serve, who: Who) -> dict[str, Any]:
    return await serving.files.get(file_id, who)


@router.get("/v1/files/{file_id}/content")
async def get_file_content(file_id: str, serving: Serve, who: Who) -> Response:
    return await serving.files.content(file_id, who)


@router.delete("/v1/files/{file_id}")
async def delete_file(file_id: str, serving: Serve, who: Who) -> dict[str, Any]:
    return await serving.files.delete(file_id, who)


@router.post("/v1/batches")
async def create_batch(body: CreateBatch, serving: Serve, who: Who) -> dict[str, Any]:
    return await serving.batches.create(body, who)


@router.get("/v1/batches/{batch_id}")
async def get_batch(batch_id: str, serving: Serve, who: Who) -> dict[str, Any]:
    return await serving.batches.get(batch_id, who)


@router.get("/v1/batches")
async def list_batches(
    serving: Serve,
    who: Who,
    limit: Annotated[int, Query(ge=1, le=batches.LIST_MAX)] = 20,
    after: str | None = None,
) -> dict[str, Any]:
    return await serving.batches.page(who, limit, after)


@router.post("/v1/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, serving: Serve, who: Who) -> dict[str, Any]:
    return await serving.batches.cancel(batch_id, who)
