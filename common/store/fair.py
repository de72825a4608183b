"""The fair-share queue of each model (GENQ_FAIR_SHARE): per model queue and tenant, the
ZSET `genq:fair:<queue>:<tenant>` of its waiting job ids.

(The scheduler's scripts and counters join this module; see the README's Fair share.)"""

from __future__ import annotations

from collections.abc import Sequence

from genq.common.store.command import Command
from genq.common.store.keys import Keys


def waiting_key(keys: Keys, queue: str, tenant: str) -> str:
    """A tenant's waiting jobs of one model queue."""
    return f"{keys.prefix}:fair:{queue}:{tenant}"


def waiting_count(keys: Keys, queues: Sequence[str], tenant: str) -> Command[int]:
    """The tenant's waiting jobs over these model queues."""
    calls = tuple(("ZCARD", waiting_key(keys, queue, tenant)) for queue in queues)
    return Command(calls, lambda replies: sum(int(n) for n in replies))
