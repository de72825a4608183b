"""Tenants: who a job, batch, file or response belongs to. A gateway key maps to one tenant
(genq.producer.gateway.auth); a Python or CLI producer names its tenant (`tenant=`,
`--tenant`). Work without a named tenant belongs to `default`.

A tenant's name is part of Redis key names (its fair-share queue, its quota bucket), so it is
held to a short, safe alphabet: no `:`, `{`, `}` or whitespace can reach a key."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from genq.common.errors import InvalidJob

DEFAULT_TENANT = "default"
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
TenantName = Annotated[str, StringConstraints(pattern=TENANT_PATTERN, strict=True)]

_TENANT = re.compile(TENANT_PATTERN)


def check_tenant(tenant: object) -> str:
    """The tenant's name; InvalidJob for one that is not 1-64 letters, digits, `.`, `_` or
    `-` (starting with a letter or digit)."""
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        shown = repr(tenant)[:70]
        raise InvalidJob(
            f"tenant must be 1-64 letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit; got {shown}"
        )
    return tenant


class TenantPolicy(BaseModel):
    """A tenant's share and limits, as the gateway's keys file gives them and every producer
    and worker reads them from Redis (genq.common.store.tenants)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: float = Field(1.0, gt=0.0, le=1_000_000.0, description="Fair-share weight.")
    max_queued: int | None = Field(None, ge=0, description="Waiting jobs it may hold.")
    tokens_per_minute: int = Field(0, ge=0, description="Token rate limit; 0: none.")


DEFAULT_POLICY = TenantPolicy()
