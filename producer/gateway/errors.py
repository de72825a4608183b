"""The gateway's one error boundary: every failure answers with OpenAI's body,
`{"error": {"message", "type", "param", "code"}}`, and the HTTP status of its kind: 400 bad
input (naming the field), 401 no valid key, 404 an unknown model or object, 413 an upload
past GENQ_FILE_BYTES_MAX, 429 load genq refuses (a model's queue holds GENQ_MAX_QUEUED
jobs; a submit over its tenant's quota, with `Retry-After`), 500 a job that failed (400 when it
failed for its input), 503 any Redis failure.

`api_error` is the one mapping, used by the app's exception handlers (`install`) and by a
stream that fails after its response started (an error event). Ids a client sent are echoed
cut to ID_SHOWN characters (`shown`).
"""

from __future__ import annotations

import logging
import math

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from genq.common.errors import (
    ErrorCode,
    GenqError,
    InvalidJob,
    JobFailed,
    QueueFull,
    QuotaExceeded,
    RedisUnavailable,
    UnknownModel,
)

ID_SHOWN = 64  # characters of a client's id echoed in an error
# A job that failed on these codes failed for what it asked: the client's fault, not genq's.
INPUT_CODES = {ErrorCode.INVALID_JOB, ErrorCode.PROMPT_TOO_LONG, ErrorCode.UNKNOWN_MODEL}

log = logging.getLogger("genq.gateway")


class ApiError(Exception):
    """An error the gateway answers with OpenAI's body (and `headers`, e.g. a job's id)."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = (
            status,
            message,
            kind,
            param,
            code,
        )
        self.headers: dict[str, str] = {}


def shown(text: str) -> str:
    """A client's id as an error echoes it: cut to ID_SHOWN characters."""
    return text if len(text) <= ID_SHOWN else f"{text[:ID_SHOWN]}... ({len(text)} characters)"


def not_found(what: str, ident: str, param: str) -> ApiError:
    """404 for an object the gateway does not keep, e.g. `No such File object: file-...`."""
    return ApiError(404, f"No such {what}: {shown(ident)}", kind="not_found_error", param=param)


def body(
    message: str, kind: str, param: str | None = None, code: str | None = None
) -> dict[str, object]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def response(error: ApiError) -> JSONResponse:
    payload = body(error.message, error.kind, error.param, error.code)
    return JSONResponse(payload, error.status, headers=error.headers or None)


def from_genq(exc: GenqError) -> ApiError:
    """The API error of a genq error."""
    if isinstance(exc, UnknownModel):
        return ApiError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, InvalidJob):
        return ApiError(400, str(exc), code=str(exc.code))
    if isinstance(exc, QueueFull | QuotaExceeded):
        return _refused(exc)
    if isinstance(exc, RedisUnavailable):
        return ApiError(503, str(exc), kind="service_unavailable", code="redis_unavailable")
    if isinstance(exc, JobFailed) and exc.error_code in INPUT_CODES:
        return ApiError(400, str(exc), code=exc.error_code)
    code = exc.error_code if isinstance(exc, JobFailed) else str(exc.code)
    return ApiError(500, str(exc), kind="server_error", code=code)


def _refused(exc: QueueFull | QuotaExceeded) -> ApiError:
    """429; over a quota, with `Retry-After` in whole seconds, rounded up (at least 1: the
    OpenAI SDK retries at once on 0)."""
    error = ApiError(429, str(exc), kind="requests", code=str(exc.code))
    if isinstance(exc, QuotaExceeded):
        error.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    return error


def api_error(exc: BaseException) -> ApiError:
    """The one mapping from any failure to the error a client is answered: genq's errors by
    kind, any Redis failure 503, anything else a 500 that shows no internals."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, GenqError):
        return from_genq(exc)
    if isinstance(exc, redis.RedisError):
        message = f"Redis failed: {type(exc).__name__}: {exc}"
        return ApiError(503, message, kind="service_unavailable", code="redis_unavailable")
    if isinstance(exc, RequestValidationError):
        return _invalid(exc)
    if isinstance(exc, HTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return ApiError(exc.status_code, str(exc.detail), kind=kind)
    return ApiError(500, "internal error: see the gateway's log", kind="server_error")


def _invalid(exc: RequestValidationError) -> ApiError:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    return ApiError(400, message, param=param)


def install(app: FastAPI) -> None:
    """Every error the app raises answers with OpenAI's body (see `api_error`)."""

    async def handle(_request: Request, exc: Exception) -> JSONResponse:
        error = api_error(exc)
        if error.status >= 500:
            log.warning("answered %d: %s: %s", error.status, type(exc).__name__, exc)
        return response(error)

    kinds = (ApiError, GenqError, redis.RedisError, RequestValidationError, HTTPException)
    for kind in (*kinds, Exception):
        app.add_exception_handler(kind, handle)
