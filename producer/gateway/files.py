"""/v1/files: JSONL uploads for batches (`purpose=batch`), kept in Redis for GENQ_JOB_TTL_S,
and the output and error files of batches (`batch_output`), in OpenAI's File shape."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Query, Request, UploadFile
from fastapi.responses import Response

from common.connection import redis_errors
from common.lifecycle import now_ms
from common.store import arun
from common.store import files as file_store
from common.store.files import StoredFile
from producer.client import AsyncClient
from producer.gateway import chunks
from producer.gateway.errors import ApiError

router = APIRouter()
UPLOAD_PURPOSES = ("batch",)
FILENAME_MAX = 255  # characters
LIST_MAX = 10_000  # OpenAI's largest `limit`


def file_object(file: StoredFile) -> dict[str, Any]:
    return {
        "id": file.file_id,
        "object": "file",
        "bytes": file.size,
        "created_at": file.created_ms // 1000,
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",  # deprecated in OpenAI's API, still read by older clients
        "status_details": None,
    }


def not_found(file_id: str) -> ApiError:
    return ApiError(404, f"No such File object: {file_id}", kind="not_found_error", param="file_id")


def _client(request: Request) -> AsyncClient:
    client: AsyncClient = request.app.state.client
    return client


async def store(client: AsyncClient, file: StoredFile, text: str) -> None:
    """Keep a file for GENQ_JOB_TTL_S."""
    ttl_s = client.settings.job_ttl_s
    with redis_errors(client.settings):
        await arun(client.redis, file_store.put(client.keys, file, text, ttl_s))


async def find(client: AsyncClient, file_id: str) -> StoredFile:
    """A kept file's description; 404 when there is none."""
    if not file_store.is_file_id(file_id):
        raise not_found(file_id)
    with redis_errors(client.settings):
        file = await arun(client.redis, file_store.read(client.keys, file_id))
    if file is None:
        raise not_found(file_id)
    return file


async def text_of(client: AsyncClient, file_id: str) -> str:
    """A kept file's text; 404 when there is none."""
    await find(client, file_id)
    with redis_errors(client.settings):
        text = await arun(client.redis, file_store.content(client.keys, file_id))
    if text is None:  # expired between the two reads
        raise not_found(file_id)
    return text


async def _read_upload(upload: UploadFile, limit: int) -> str:
    """The upload's text; 413 past `limit` bytes, 400 when it is not UTF-8 text."""
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ApiError(
            413,
            f"file: larger than {limit:,} bytes, the gateway's limit (GENQ_FILE_BYTES_MAX)",
            param="file",
            code="file_too_large",
        )
    if b"\x00" in data:
        message = "file: not text (it holds NUL bytes); a batch is a JSONL file"
        raise ApiError(400, message, param="file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"file: not UTF-8 text (byte {exc.start}); a batch is a JSONL file"
        raise ApiError(400, message, param="file") from None


def _filename(upload: UploadFile) -> str:
    name = upload.filename or "upload.jsonl"
    if len(name) > FILENAME_MAX:
        raise ApiError(400, f"file: a filename of at most {FILENAME_MAX} characters", param="file")
    return name


@router.post("/v1/files")
async def create_file(
    request: Request, file: UploadFile, purpose: Annotated[str, Form()]
) -> dict[str, Any]:
    if purpose not in UPLOAD_PURPOSES:
        message = f"purpose: genq takes {', '.join(UPLOAD_PURPOSES)} only, got {purpose!r}"
        raise ApiError(400, message, param="purpose")
    client = _client(request)
    text = await _read_upload(file, client.settings.file_bytes_max)
    size = len(text.encode("utf-8"))
    stored = StoredFile(file_store.new_file_id(), size, now_ms(), _filename(file), purpose)
    await store(client, stored, text)
    return file_object(stored)


def _after(ids: list[str], after: str | None) -> list[str]:
    start = ids.index(after) + 1 if after in ids else 0
    return ids[start:]


@router.get("/v1/files")
async def list_files(
    request: Request,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=LIST_MAX)] = LIST_MAX,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> dict[str, Any]:
    client = _client(request)
    since = now_ms() - client.settings.job_ttl_s * 1000
    with redis_errors(client.settings):
        ids = await arun(client.redis, file_store.ids(client.keys, since, order == "desc"))
        wanted = _after(ids, after) if purpose else _after(ids, after)[: limit + 1]
        listed = await arun(client.redis, file_store.read_many(client.keys, wanted))
    matching = [f for f in listed if purpose is None or f.purpose == purpose]
    data = [file_object(f) for f in matching[:limit]]
    return chunks.list_page(data, has_more=len(matching) > limit)


@router.get("/v1/files/{file_id}")
async def get_file(file_id: str, request: Request) -> dict[str, Any]:
    return file_object(await find(_client(request), file_id))


@router.get("/v1/files/{file_id}/content")
async def get_file_content(file_id: str, request: Request) -> Response:
    text = await text_of(_client(request), file_id)
    return Response(text.encode("utf-8"), media_type="application/octet-stream")


@router.delete("/v1/files/{file_id}")
async def delete_file(file_id: str, request: Request) -> dict[str, Any]:
    client = _client(request)
    if not file_store.is_file_id(file_id):
        raise not_found(file_id)
    with redis_errors(client.settings):
        deleted = await arun(client.redis, file_store.delete(client.keys, file_id))
    if not deleted:
        raise not_found(file_id)
    return {"id": file_id, "object": "file", "deleted": True}
