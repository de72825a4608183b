"""Reading POST /v1/files's multipart body no further than GENQ_FILE_BYTES_MAX (and the
form around the file): a body that declares more (Content-Length) is refused before any of it
is read, and one that sends more (chunked) once it has; so no more than the limit is ever
held or spooled to disk. The file's text must be UTF-8, not empty, with no NUL byte."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive

from genq.producer.gateway.errors import ApiError, shown

# What a multipart body holds beyond its file: boundaries, part headers (a filename of at most
# FILENAME_MAX characters) and the `purpose` field.
FORM_OVERHEAD_BYTES = 16 * 1024
FIELD_BYTES_MAX = 1024  # a form field other than the file (`purpose`)
FIELDS_MAX = 8
FILENAME_MAX = 255  # characters
UPLOAD_PURPOSES = ("batch",)


@dataclass(frozen=True)
class Upload:
    text: str
    size: int  # bytes
    filename: str
    purpose: str


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"file: larger than {limit:,} bytes, the gateway's limit (GENQ_FILE_BYTES_MAX)",
        param="file",
        code="file_too_large",
    )


def _capped(receive: Receive, cap: int, limit: int) -> Receive:
    """The request's body messages; 413 once they pass `cap` bytes (the rest is never read)."""
    total = 0

    async def capped() -> Message:
        nonlocal total
        message = await receive()
        total += len(message.get("body", b""))
        if total > cap:
            raise too_large(limit)
        return message

    return capped


async def read_upload(request: Request, limit: int) -> Upload:
    """The uploaded file and its purpose; 413 past `limit` bytes, 400 for a bad form."""
    cap = limit + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise too_large(limit)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(400, "file: send a multipart/form-data body with `file` and `purpose`")
    capped = Request(request.scope, _capped(request.receive, cap, limit))
    try:
        form = await capped.form(max_files=1, max_fields=FIELDS_MAX, max_part_size=FIELD_BYTES_MAX)
    except HTTPException as exc:  # Starlette's 400 for a malformed form
        raise ApiError(400, f"file: {exc.detail}", param="file") from None
    try:
        file, purpose = form.get("file"), form.get("purpose")
        if not isinstance(file, UploadFile):
            raise ApiError(400, "file: missing; send the JSONL file as `file`", param="file")
        data = await file.read()
        text = await anyio.to_thread.run_sync(_text, data, limit)  # up to 100 MiB to scan
        return Upload(text, len(data), _filename(file), _purpose(purpose))
    finally:
        await form.close()


def _purpose(purpose: object) -> str:
    if purpose in UPLOAD_PURPOSES:
        return str(purpose)
    given = shown(purpose) if isinstance(purpose, str) else "none"
    message = f"purpose: genq takes {', '.join(UPLOAD_PURPOSES)} only, got {given!r}"
    raise ApiError(400, message, param="purpose")


def _text(data: bytes, limit: int) -> str:
    """The file's text; 413 past `limit` bytes, 400 when it is empty or not UTF-8 text."""
    if len(data) > limit:
        raise too_large(limit)
    if not data:
        raise ApiError(400, "file: empty; a batch is a JSONL file of requests", param="file")
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
