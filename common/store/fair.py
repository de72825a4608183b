"""The fair-share queue of each model (GENQ_FAIR_SHARE, README: Fair share): who waits, and
each tenant's virtual token counter, as in VTC ("Fairness in Serving Large Language Models",
OSDI 2024).

Keys, per model queue `<q>` (e.g. `cpu.tiny`):
- `genq:fair:<q>:<tenant>`: ZSET of the tenant's waiting job ids (entered with the job's
  record, left when the job is claimed, or ends unstarted), scored `(9 - priority) * 2^48 +
  seq` so that within a tenant priority 9 comes first, then submit order;
- `genq:fair-vtc:<q>`: HASH tenant -> virtual counter (tokens served over weight), and the
  field `_floor` (no tenant name starts with `_`): the counter of the last tenant picked;
- `genq:fair-backlog:<q>`: ZSET of the tenants with waiting jobs, scored by their counter;
- `genq:fair-seq`: the submit sequence.

The scripts live where their callers' scripts live (CLAIM and FINISH in leases.py, SUBMIT in
batches.py) and share the Lua functions below, `LUA`: a task message at epoch 0 is a ticket
for its queue, and CLAIM picks with it the fairest waiting job (`pick`). Key names are spelled
in Lua once, here, from the prefix the caller passes (these scripts already need one Redis
node: leases.py).

Cost of a job (VTC's weights): W_IN per prompt token plus W_OUT per completion token, divided
by the tenant's weight (common/store/tenants.py). At claim a job is charged its reservation,
W_IN * (its prompt's bytes / CHARS_PER_TOKEN) + W_OUT * max_tokens (`reservation`), so that the next
claims, a millisecond later, already see it; when it ends, FINISH charges the difference
between its actual cost and that reservation. A tenant that becomes backlogged is lifted to
the least counter of the backlogged tenants (the last one picked when none is): an idle tenant
banks no credit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from genq.common.schemas import PRIORITY_MAX, JobRecord, JobSpec
from genq.common.store import jobs
from genq.common.store.command import Command
from genq.common.store.keys import Keys

W_IN = 1  # cost of a prompt token
W_OUT = 2  # cost of a completion token
CHARS_PER_TOKEN = 4  # a prompt's tokens, estimated from its length (OpenAI's rule of thumb)
FLOOR = "_floor"


def waiting_key(keys: Keys, queue: str, tenant: str) -> str:
    """A tenant's waiting jobs of one model queue."""
    return f"{keys.prefix}:fair:{queue}:{tenant}"


def counters_key(keys: Keys, queue: str) -> str:
    return f"{keys.prefix}:fair-vtc:{queue}"


def backlog_key(keys: Keys, queue: str) -> str:
    return f"{keys.prefix}:fair-backlog:{queue}"


def reservation(spec: JobSpec) -> int:
    """What CLAIM charges a job (as the Lua `fair_reserved` does)."""
    prompt_bytes = len((spec.prompt or "").encode()) + sum(
        len(m.content.encode()) for m in spec.messages or []
    )
    return W_IN * -(-prompt_bytes // CHARS_PER_TOKEN) + W_OUT * spec.max_tokens


def waiting_tenants(keys: Keys, queue: str) -> Command[int]:
    """How many tenants have jobs waiting in the queue (0: none waits)."""
    return Command((("ZCARD", backlog_key(keys, queue)),), lambda replies: int(replies[0]))


def waiting_count(keys: Keys, queues: Sequence[str], tenant: str) -> Command[int]:
    """The tenant's waiting jobs over these model queues."""
    calls = tuple(("ZCARD", waiting_key(keys, queue, tenant)) for queue in queues)
    return Command(calls, lambda replies: sum(int(n) for n in replies))


# The functions the fair-share scripts share; `P` is the key prefix (set by the script).
LUA = f"""
local W_IN, W_OUT, CHARS_PER_TOKEN = {W_IN}, {W_OUT}, {CHARS_PER_TOKEN}
local PRIORITY_STEP = 281474976710656  -- 2^48: submit sequences below it
local function waiting_key(q, t) return P .. ':fair:' .. q .. ':' .. t end
local function counters_key(q) return P .. ':fair-vtc:' .. q end
local function backlog_key(q) return P .. ':fair-backlog:' .. q end
local function job_key(id) return P .. ':{{' .. id .. '}}:job' end
local function cancel_key(id) return P .. ':{{' .. id .. '}}:cancel' end
local function batch_key(b) return P .. ':batch:{{' .. b .. '}}' end

local function fair_weight(t)
  local raw = redis.call('HGET', P .. ':tenants', t)
  if not raw then return 1 end
  local ok, policy = pcall(cjson.decode, raw)
  local w = ok and type(policy) == 'table' and tonumber(policy.weight) or 1
  if w <= 0 then return 1 end
  return w
end

-- A job enters its tenant's waiting set; a tenant not backlogged till now is lifted.
local function fair_enter(q, t, id, priority)
  local seq = redis.call('INCR', P .. ':fair-seq')
  local score = ({PRIORITY_MAX} - tonumber(priority)) * PRIORITY_STEP + seq
  redis.call('ZADD', waiting_key(q, t), score, id)
  if redis.call('ZSCORE', backlog_key(q), t) then return end
  local least = redis.call('ZRANGE', backlog_key(q), 0, 0, 'WITHSCORES')
  local floor = tonumber(least[2] or redis.call('HGET', counters_key(q), '{FLOOR}') or '0')
  local counter = math.max(tonumber(redis.call('HGET', counters_key(q), t) or '0'), floor)
  redis.call('HSET', counters_key(q), t, counter)
  redis.call('ZADD', backlog_key(q), counter, t)
end

-- A job leaves its tenant's waiting set (claimed, or ended unstarted).
local function fair_leave(q, t, id)
  if redis.call('ZREM', waiting_key(q, t), id) == 1
     and redis.call('ZCARD', waiting_key(q, t)) == 0 then
    redis.call('ZREM', backlog_key(q), t)
  end
end

local function fair_charge(q, t, cost)
  if cost == 0 then return end
  local counter = redis.call('HINCRBYFLOAT', counters_key(q), t, cost / fair_weight(t))
  redis.call('ZADD', backlog_key(q), 'XX', counter, t)
end

-- What a job is charged when claimed, from its spec (JSON): see the module's docstring.
local function fair_reserved(spec)
  local ok, s = pcall(cjson.decode, spec or '')
  if not ok or type(s) ~= 'table' then return 0 end
  local bytes = type(s.prompt) == 'string' and #s.prompt or 0
  if type(s.messages) == 'table' then
    for _, m in ipairs(s.messages) do
      if type(m) == 'table' and type(m.content) == 'string' then bytes = bytes + #m.content end
    end
  end
  return W_IN * math.ceil(bytes / CHARS_PER_TOKEN) + W_OUT * (tonumber(s.max_tokens) or 0)
end

-- The fairest waiting job of queue q, out of its waiting set: the head of the backlogged
-- tenant with the least counter (ties: by name). Nil when no job waits.
local function fair_pop(q)
  while true do
    local least = redis.call('ZRANGE', backlog_key(q), 0, 0, 'WITHSCORES')
    if #least == 0 then return nil end
    local t = least[1]
    local head = redis.call('ZPOPMIN', waiting_key(q, t))
    if redis.call('ZCARD', waiting_key(q, t)) == 0 then redis.call('ZREM', backlog_key(q), t) end
    if #head > 0 then
      redis.call('HSET', counters_key(q), '{FLOOR}', least[2])
      return head[1]
    end
  end
end
"""

# KEYS: the job hash. ARGV: prefix, job id. Enter a new job (its record written in the same
# transaction) into its tenant's waiting set.
ENTER = f"""
local P = ARGV[1]
{LUA}
local job = redis.call('HMGET', KEYS[1], 'queue', 'tenant', 'priority')
fair_enter(job[1], job[2], ARGV[2], job[3])
return 1
"""


def enter(keys: Keys, job_id: str, record: JobRecord) -> Command[None]:
    """A new job enters its tenant's waiting set: run it in the transaction that writes the
    job's record (jobs.write), after it."""
    call = ("EVAL", ENTER, 1, jobs.record_key(keys, job_id), keys.prefix, job_id)
    return Command((call,), lambda replies: None)


# KEYS: none. ARGV: prefix, queue, tenant, job id. A job leaves its tenant's waiting set, and
# the tenant the backlog when it was its last waiting job (as a claim's leaving does).
LEAVE = f"""
local P = ARGV[1]
{LUA}
fair_leave(ARGV[2], ARGV[3], ARGV[4])
return 1
"""


def forget(keys: Keys, job_id: str, record: JobRecord) -> Command[None]:
    """A job whose task message could not be sent leaves its waiting set (with its record)."""
    call = ("EVAL", LEAVE, 0, keys.prefix, record.queue, record.tenant, job_id)
    return Command((call,), lambda replies: None)


# KEYS: none. ARGV: prefix, queue. -> flat tenant, waiting jobs, counter for every tenant the
# queue has a counter for.
TENANTS = f"""
local P = ARGV[1]
{LUA}
local q = ARGV[2]
local out = {{}}
local all = redis.call('HGETALL', counters_key(q))
for i = 1, #all, 2 do
  if all[i] ~= '{FLOOR}' then
    out[#out + 1] = all[i]
    out[#out + 1] = redis.call('ZCARD', waiting_key(q, all[i]))
    out[#out + 1] = all[i + 1]
  end
end
return out
"""


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value  # a client of either kind


def tenants(keys: Keys, queue: str) -> Command[dict[str, tuple[int, float]]]:
    """Every tenant the queue has served or holds: its waiting jobs and its virtual counter,
    for the metrics and the benchmark."""

    def decode(replies: list[Any]) -> dict[str, tuple[int, float]]:
        flat = replies[0]
        return {
            _text(t): (int(n), float(c))
            for t, n, c in zip(flat[::3], flat[1::3], flat[2::3], strict=True)
        }

    return Command((("EVAL", TENANTS, 0, keys.prefix, queue),), decode)
