"""Tenants' token buckets (their `tokens_per_minute` quota): per tenant the hash
`genq:quota:<tenant>`, with the tokens it holds (`tokens`, a float) and when that was so
(`ms`). The bucket holds at most a minute's tokens and refills continuously at
tokens_per_minute/60 per second, on Redis's clock (TIME), so that every producer, whatever
its own clock, sees one bucket. A bucket without a key is full: the key expires when the
bucket would be full again.

TAKE (below) refills and takes in one step: a submit takes its jobs' tokens, or none when the
bucket holds fewer (and learns how long until it would hold them); a submit that took tokens
and then queued nothing gives them back (a negative cost), up to the capacity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from genq.common.store.command import Command
from genq.common.store.keys import Keys

# KEYS: the bucket. ARGV: the capacity (tokens per minute), the cost (< 0: a refund).
# Returns {taken (0/1), tokens held after (refused: held now; rounded down), ms until the
# bucket holds the cost (0 when taken)}.
TAKE = """
local capacity, cost = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local held, at = unpack(redis.call('HMGET', KEYS[1], 'tokens', 'ms'))
held, at = tonumber(held), tonumber(at)
if not held or not at then held, at = capacity, now end
held = math.min(capacity, held + math.max(0, now - at) * capacity / 60000)
if cost > held then
  return {0, math.floor(held), math.ceil((cost - held) * 60000 / capacity)}
end
held = math.min(capacity, held - cost)
local full_in = math.ceil((capacity - held) * 60000 / capacity)
if full_in <= 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'tokens', tostring(held), 'ms', now)
  redis.call('PEXPIRE', KEYS[1], full_in)
end
return {1, math.floor(held), 0}
"""


@dataclass(frozen=True)
class Take:
    """What TAKE did: whether it took the cost, the tokens the bucket holds (after the take;
    refused, as it was), and the milliseconds until it would hold the cost (0 when taken)."""

    taken: bool
    held: int
    wait_ms: int


def bucket_key(keys: Keys, tenant: str) -> str:
    return f"{keys.prefix}:quota:{tenant}"


def take(keys: Keys, tenant: str, per_minute: int, cost: int) -> Command[Take]:
    """Take `cost` tokens from the tenant's bucket of `per_minute` (> 0) tokens, or none."""
    call = ("EVAL", TAKE, 1, bucket_key(keys, tenant), per_minute, cost)
    return Command((call,), _take)


def give_back(keys: Keys, tenant: str, per_minute: int, cost: int) -> Command[Take]:
    """Return `cost` tokens taken for jobs that were not queued (never past the capacity)."""
    return take(keys, tenant, per_minute, -cost)


def _take(replies: list[Any]) -> Take:
    taken, held, wait_ms = replies[0]
    return Take(bool(taken), int(held), int(wait_ms))
