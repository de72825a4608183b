"""Bearer API keys: every /v1 route needs one of the keys of GENQ_API_KEYS or
GENQ_API_KEYS_FILE, compared in constant time. With no keys configured the gateway accepts any
request, and listens on loopback only (`genq serve` refuses another interface). Keys are never
logged."""

from __future__ import annotations

import hmac

from fastapi import Request

from genq.producer.gateway.errors import ApiError


def check(request: Request) -> None:
    """FastAPI dependency: 401 in OpenAI's shape without a valid key."""
    keys: frozenset[str] = request.app.state.keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer" and any(hmac.compare_digest(given, key) for key in keys):
        return
    raise ApiError(
        401,
        "Incorrect API key provided: give one of the gateway's keys as `Authorization: Bearer KEY`",
        code="invalid_api_key",
    )
