"""OpenAI's error body, `{"error": {"message", "type", "param", "code"}}`, with the HTTP
status each kind of failure gets: 400 bad input (naming the field), 401 no valid key, 404 an
unknown model or object, 429 load genq refuses (a model's queue holds GENQ_MAX_QUEUED
jobs), 503 Redis unavailable."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from common.errors import GenqError, InvalidJob, QueueFull, RedisUnavailable, UnknownModel


class ApiError(Exception):
    """An error the gateway answers with OpenAI's body."""

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


def body(
    message: str, kind: str, param: str | None = None, code: str | None = None
) -> dict[str, object]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def response(error: ApiError) -> JSONResponse:
    return JSONResponse(body(error.message, error.kind, error.param, error.code), error.status)


def from_genq(exc: GenqError) -> ApiError:
    """The API error of a genq error."""
    if isinstance(exc, UnknownModel):
        return ApiError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, InvalidJob):
        return ApiError(400, str(exc), code=str(exc.code))
    if isinstance(exc, QueueFull):
        return ApiError(429, str(exc), kind="requests", code="queue_full")
    if isinstance(exc, RedisUnavailable):
        return ApiError(503, str(exc), kind="service_unavailable", code="redis_unavailable")
    return ApiError(500, str(exc), kind="server_error", code=str(getattr(exc, "code", "")) or None)


def install(app: FastAPI) -> None:
    """Every error the app raises answers with OpenAI's body."""

    async def api_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return response(exc)

    async def genq_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GenqError)
        return response(from_genq(exc))

    async def invalid(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(part) for part in first.get("loc", ()) if part != "body"]
        param = ".".join(loc) or None
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        return response(ApiError(400, message, param=param))

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return response(ApiError(exc.status_code, str(exc.detail), kind=kind))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(GenqError, genq_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
