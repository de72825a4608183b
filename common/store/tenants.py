"""Tenants' policies (weight and quotas), the hash `genq:tenants`: one field per tenant, its
TenantPolicy as JSON. The gateway writes it from its keys file when it starts, so that every
producer (the Python client, the CLI) holds submits to the same quotas and every worker's
claim reads the same weights. A tenant without a field has the default policy (weight 1, no
limits)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from genq.common.store.command import Command
from genq.common.store.keys import Keys
from genq.common.tenants import DEFAULT_POLICY, TenantPolicy


def policies_key(keys: Keys) -> str:
    return f"{keys.prefix}:tenants"


def write_policies(keys: Keys, policies: Mapping[str, TenantPolicy]) -> Command[None]:
    """Set these tenants' policies (others are left as they are)."""
    pairs = [part for name, p in policies.items() for part in (name, p.model_dump_json())]
    calls = (("HSET", policies_key(keys), *pairs),) if pairs else ()
    return Command(calls, lambda replies: None)


def read_policy(keys: Keys, tenant: str) -> Command[TenantPolicy]:
    """A tenant's policy; the default one when none is stored, or when what is stored is not
    one genq wrote."""
    return Command((("HGET", policies_key(keys), tenant),), lambda replies: _policy(replies[0]))


def _policy(raw: Any) -> TenantPolicy:
    if not raw:
        return DEFAULT_POLICY
    try:
        return TenantPolicy.model_validate_json(raw)
    except ValidationError:
        return DEFAULT_POLICY
