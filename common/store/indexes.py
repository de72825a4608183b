"""The names of the two global indexes, sorted sets that the lease scripts
(common/store/leases.py) and the batch SUBMIT script (common/store/batches.py) both keep:
`genq:leases`, job id -> lease deadline (ms) of running jobs, and `genq:expiries`, job id ->
expiry (ms) of jobs not started yet that have one. Their encoding is leases.py's."""

from __future__ import annotations

from genq.common.store.keys import Keys


def leases_key(keys: Keys) -> str:
    return f"{keys.prefix}:leases"


def expiries_key(keys: Keys) -> str:
    return f"{keys.prefix}:expiries"
