"""Bearer API keys: every /v1 route needs one of the keys of GENQ_API_KEYS or
GENQ_API_KEYS_FILE (genq.common.apikeys). The gateway holds only their SHA-256 digests; a
request's key is hashed and compared with each in constant time. With no keys configured the
gateway accepts any request, and listens on loopback only (`genq serve` refuses another
interface). Keys are never logged.

A request's key decides its `Principal`: the tenant whose work it may see, and whether it may
see every tenant's (an admin key; a gateway without keys is one open tenant, `default`, that
sees everything). Routes take it with `Depends(auth.principal)`."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from genq.common.apikeys import ApiKeys
from genq.common.tenants import DEFAULT_TENANT
from genq.producer.gateway.errors import ApiError


@dataclass(frozen=True)
class Principal:
    """Who a request acts for."""

    tenant: str = DEFAULT_TENANT
    admin: bool = False

    def sees(self, tenant: str) -> bool:
        """Whether work of `tenant` is visible to this principal (else it answers 404, as an
        unknown id does: no existence leak)."""
        return self.admin or tenant == self.tenant


OPEN = Principal(DEFAULT_TENANT, admin=True)  # a gateway without keys


def check(request: Request) -> None:
    """FastAPI dependency: 401 in OpenAI's shape without a valid key; else the request's
    principal is `request.state.principal`."""
    request.state.principal = _authenticate(request)


def principal(request: Request) -> Principal:
    """FastAPI dependency: who the request acts for (after `check`)."""
    found: Principal | None = getattr(request.state, "principal", None)
    return found if found is not None else _authenticate(request)


def _authenticate(request: Request) -> Principal:
    keys: ApiKeys = request.app.state.keys
    if not keys:
        return OPEN
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    found = keys.match(given) if scheme.lower() == "bearer" else None
    if found is not None:
        return Principal(found.tenant, found.admin)
    raise ApiError(
        401,
        "Incorrect API key provided: give one of the gateway's keys as `Authorization: Bearer KEY`",
        code="invalid_api_key",
    )
