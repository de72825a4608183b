"""The global lease index `genq:leases` and expiry index `genq:expiries` (sorted sets), and
the Lua scripts that move a job between states: CLAIM, RENEW, FINISH, REAP. Each script sits
beside the one function that builds its call, so its KEYS and ARGV order is written once.

Encoding (version 1): `genq:leases` maps a job id to the deadline (ms) of the lease of its
running attempt (or, after REAP requeued it, a grace deadline); `genq:expiries` maps a job id
to the expiry time (ms) of a job not started yet that has one. The job hash they read and
write is common/store/jobs.py's.

The scripts fence by epoch: the job hash's `epoch` is the attempt allowed to write, so a
worker presumed dead that is still running can neither renew nor finish the job.

Slots: a job's own keys share its hash tag, but the two indexes are global keys (one sorted
set each, so that the reaper and the expirer find due jobs with one range read), and a batch's
keys carry the batch id's tag. So every script here touches more than one slot:
- CLAIM: both indexes (the lease starts, the expiry no longer applies), the batch hash (its
  counts and cancel flag, read in the same step as the jobs' states), and every job of a
  bundle (one round trip claims a task message's jobs);
- RENEW: the lease index and every renewed job's hash (one call per heartbeat);
- FINISH: both indexes (the job leaves them as it ends) and the batch's hash, jobs list, index
  and `:ended` channel (its counts move with the job's state);
- REAP: the lease index and the batch hash (its counts), beside the job's hash and stream.
Redis Cluster refuses a script whose keys hash to different slots: these need one Redis node,
as genq has today. Moving the per-job data plane onto a cluster means splitting the indexes
and batch counts out of these scripts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from genq.common.schemas import JobRecord, JobState
from genq.common.store import batches, fair, jobs, streams
from genq.common.store.command import Call, Command
from genq.common.store.indexes import expiries_key, leases_key
from genq.common.store.keys import Keys

# KEYS: leases, expiries, then per task-message job: job hash, cancel key.
# ARGV: now_ms, lease_ms, worker, key prefix, fair (1 or 0), then per job: job_id, epoch.
# -> per job: an outcome (claimed | missing | finished | stale | held | cancelled | expired |
# idle), the id of the job it concerns, that job's hash when claimed (else an empty list), and
# the flat (job id, outcome) pairs of waiting jobs a ticket found cancelled or expired. One call
# claims a bundle's jobs, each under its own lease, and reads their records. A queued job whose
# cancel was asked for, or that was not started before its expiry, is not started: the caller
# ends it (genq.common.lifecycle). A job that started once never expires.
#
# With fair (GENQ_FAIR_SHARE), a message at epoch 0 is a ticket for its job's queue: it claims
# the fairest waiting job (common/store/fair.py), whichever that is, or nothing (idle) when
# none waits. A job at a later epoch (requeued) claims its own job, as without. A claimed job
# leaves its waiting set and is charged its reservation either way.
CLAIM = f"""
local P = ARGV[4]
{fair.LUA}
local now, lease_ms, worker, fair = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[5] == '1'

local function cancelled_batch(batch)
  local flag = batch and redis.call('HGET', batch, 'cancel_requested')
  return flag == '1' or flag == 'True'  -- 'True': genq's earlier spelling
end

local function claim(job, cancel, id, epoch)
  local st = redis.call('HMGET', job, 'state', 'epoch', 'expires_ms', 'batch_id', 'queue',
                        'tenant')
  if not st[1] then return 'missing' end
  if st[1] ~= 'queued' and st[1] ~= 'running' then return 'finished' end
  if tonumber(st[2]) ~= epoch then return 'stale' end
  local batch = st[4] and st[4] ~= '' and batch_key(st[4])
  local batch_cancelled = cancelled_batch(batch)
  if st[1] == 'running' then
    local lease = redis.call('ZSCORE', KEYS[1], id)
    if lease and tonumber(lease) > now then return 'held' end
    -- A lapsed job of a cancelled batch is resumed only to end with its committed text: its
    -- cancel key tells the new attempt so, whatever became of the key the cancel wrote.
    if batch_cancelled then
      local ttl = redis.call('PTTL', job)
      if ttl > 0 then redis.call('SET', cancel, '1', 'PX', ttl)
      else redis.call('SET', cancel, '1') end
    end
  else
    if batch_cancelled or redis.call('EXISTS', cancel) == 1 then return 'cancelled' end
    local expires = tonumber(st[3] or '0')
    if expires > 0 and now >= expires and epoch == 0 then return 'expired' end
    if batch then
      redis.call('HINCRBY', batch, 'queued', -1)
      redis.call('HINCRBY', batch, 'running', 1)
    end
    if epoch == 0 and st[5] then
      local tenant = st[6] or 'default'
      fair_leave(st[5], tenant, id)
      fair_charge(st[5], tenant, fair_reserved(redis.call('HGET', job, 'spec')))
    end
  end
  redis.call('HSET', job, 'state', 'running', 'worker', worker, 'started_ms', ARGV[1])
  redis.call('HINCRBY', job, 'attempts', 1)
  redis.call('ZADD', KEYS[1], now + lease_ms, id)
  redis.call('ZREM', KEYS[2], id)
  return 'claimed'
end

-- A ticket: the fairest waiting job of the message's queue. A message whose own job waits
-- in no set (queued before the fair share) claims that job.
local function ticket(job, cancel, id, dropped)
  local own = redis.call('HMGET', job, 'state', 'epoch', 'queue', 'tenant')
  local q = own[3]
  if not q then return 'idle', id end
  if own[1] == 'queued' and own[2] == '0'
     and not redis.call('ZSCORE', waiting_key(q, own[4] or 'default'), id) then
    return claim(job, cancel, id, 0), id
  end
  while true do
    local pick = fair_pop(q)
    if not pick then return 'idle', id end
    local outcome = claim(job_key(pick), cancel_key(pick), pick, 0)
    if outcome == 'claimed' then return outcome, pick end
    if outcome == 'cancelled' or outcome == 'expired' then
      dropped[#dropped + 1] = pick
      dropped[#dropped + 1] = outcome
    end
  end
end

local out = {{}}
for i = 3, #KEYS, 2 do
  local n = 6 + (i - 3)
  local id, epoch = ARGV[n], tonumber(ARGV[n + 1])
  local outcome, dropped = nil, {{}}
  if fair and epoch == 0 then
    outcome, id = ticket(KEYS[i], KEYS[i + 1], id, dropped)
  else
    outcome = claim(KEYS[i], KEYS[i + 1], id, epoch)
  end
  out[#out + 1] = outcome
  out[#out + 1] = id
  out[#out + 1] = outcome == 'claimed' and redis.call('HGETALL', job_key(id)) or {{}}
  out[#out + 1] = dropped
end
return out
"""


class ClaimOutcome(StrEnum):
    """What CLAIM did with one job."""

    CLAIMED = "claimed"  # now running under this worker's lease
    MISSING = "missing"  # no such job kept
    FINISHED = "finished"  # it already ended
    STALE = "stale"  # the message is of another epoch
    HELD = "held"  # a live attempt holds its lease
    CANCELLED = "cancelled"  # queued, and its cancel was asked for: the caller ends it
    EXPIRED = "expired"  # queued past its expiry: the caller ends it
    IDLE = "idle"  # a ticket (fair share) that found no job waiting: nothing to run


@dataclass(frozen=True)
class Claimed:
    """One task-message job's CLAIM outcome: the job it concerns (with the fair share, the job
    a ticket picked), its record when claimed, and the waiting jobs a ticket found cancelled
    or expired on its way (the caller ends them)."""

    job_id: str
    outcome: ClaimOutcome
    record: JobRecord | None = None
    dropped: tuple[tuple[str, ClaimOutcome], ...] = ()


def _eval(script: str, names: Sequence[str], args: Sequence[Any]) -> Call:
    return ("EVAL", script, len(names), *names, *args)


def claim(
    keys: Keys,
    jobs_epochs: Sequence[tuple[str, int]],
    worker: str,
    now_ms: int,
    lease_ms: int,
    fair: bool = False,
) -> Command[list[Claimed]]:
    """Claim a task message's jobs at their epochs, each under its own lease of `lease_ms`;
    their outcomes in order. With `fair`, a job at epoch 0 is a ticket: the job claimed is the
    fairest waiting one of its queue (see CLAIM). InvalidEntry when a claimed job's record
    does not validate."""
    names = [leases_key(keys), expiries_key(keys)]
    args: list[str | int] = [now_ms, lease_ms, worker, keys.prefix, int(fair)]
    for job_id, epoch in jobs_epochs:
        names += [jobs.record_key(keys, job_id), jobs.cancel_key(keys, job_id)]
        args += [job_id, epoch]

    def decode(replies: list[Any]) -> list[Claimed]:
        flat = replies[0]
        return [_claimed(*flat[at : at + 4]) for at in range(0, len(flat), 4)]

    return Command((_eval(CLAIM, names, args),), decode)


def _claimed(outcome: str, job_id: str, raw: list[str], dropped: list[str]) -> Claimed:
    pairs = zip(dropped[::2], dropped[1::2], strict=True)
    passed = tuple((str(j), ClaimOutcome(o)) for j, o in pairs)
    if outcome != ClaimOutcome.CLAIMED:
        return Claimed(job_id, ClaimOutcome(outcome), None, passed)
    fields = dict(zip(raw[::2], raw[1::2], strict=True))
    return Claimed(job_id, ClaimOutcome.CLAIMED, jobs.parse(job_id, fields), passed)


# KEYS: leases, then one job hash per job. ARGV: deadline_ms, then per job: job_id, epoch.
# -> per job: 1 renewed, 0 superseded (the job's epoch moved on, or it is no longer running)
RENEW = """
local out = {}
for i = 2, #KEYS do
  local id, epoch = ARGV[2 * i - 2], ARGV[2 * i - 1]
  local st = redis.call('HMGET', KEYS[i], 'state', 'epoch')
  if st[1] == 'running' and tonumber(st[2]) == tonumber(epoch) then
    redis.call('ZADD', KEYS[1], ARGV[1], id)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""


def renew(
    keys: Keys, jobs_epochs: Sequence[tuple[str, int]], deadline_ms: int
) -> Command[list[bool]]:
    """Move running jobs' leases to `deadline_ms`; per job, False when its attempt was
    superseded (its epoch moved on, or it is no longer running)."""
    names = [leases_key(keys), *(jobs.record_key(keys, job_id) for job_id, _ in jobs_epochs)]
    args = [deadline_ms, *(part for pair in jobs_epochs for part in pair)]
    return Command((_eval(RENEW, names, args),), lambda replies: [bool(ok) for ok in replies[0]])


# KEYS: job hash, leases, expiries, [batch hash, batch jobs, batch index, batch ended channel].
# ARGV: job_id, epoch, from_state, ttl_s, channel, frame, tokens, now_ms, key prefix,
# prompt_tokens, then field/value pairs (`state` among them). The final record and the
# terminal frame together, only while the job is still in `from_state` at this epoch; the
# batch's counts move with it, and the job id goes out on the batch's channel (a channel,
# listed in KEYS for its slot); a response's record of the job is kept as long as the job.
# The job leaves its fair-share waiting set (an unstarted one is in it), and a job that was
# claimed (charged its reservation) is charged the rest of its actual cost, or given back what
# it did not use (common/store/fair.py). -> 1 or 0
FINISH = f"""
local P = ARGV[9]
{fair.LUA}
local st = redis.call('HMGET', KEYS[1], 'state', 'epoch', 'queue', 'tenant', 'spec')
if st[1] ~= ARGV[3] or tonumber(st[2]) ~= tonumber(ARGV[2]) then return 0 end
for i = 11, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
-- A response's record (store/responses.py) is kept as long as its job's, from the job's end.
redis.call('EXPIRE', P .. ':{{' .. ARGV[1] .. '}}:resp', ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if st[3] then
  local tenant = st[4] or 'default'
  fair_leave(st[3], tenant, ARGV[1])
  if st[1] == 'running' or tonumber(st[2]) > 0 then
    local cost = W_IN * tonumber(ARGV[10]) + W_OUT * tonumber(ARGV[7])
    fair_charge(st[3], tenant, cost - fair_reserved(st[5]))
  end
end
if KEYS[4] then
  redis.call('HINCRBY', KEYS[4], st[1], -1)
  redis.call('HINCRBY', KEYS[4], redis.call('HGET', KEYS[1], 'state'), 1)
  redis.call('HINCRBY', KEYS[4], 'tokens', ARGV[7])
  redis.call('HSET', KEYS[4], 'finished_ms', ARGV[8])
  for i = 4, 6 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
  if KEYS[7] then redis.call('PUBLISH', KEYS[7], ARGV[1]) end
end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
"""


@dataclass(frozen=True)
class Ending:
    """A job's final fields and terminal frame (see `finish`)."""

    job_id: str
    epoch: int
    batch_id: str
    from_state: JobState
    fields: Mapping[str, Any]  # `state` among them
    frame: str
    tokens: int = 0  # completion tokens
    prompt_tokens: int = 0  # with `tokens`, what the job is charged (fair share)


def finish(keys: Keys, ending: Ending, ttl_s: int, now_ms: int) -> Command[bool]:
    """Apply an ending while the job is still in `from_state` at its epoch: the final record
    (kept `ttl_s`), out of both indexes, the batch's counts, the job id on the batch's
    `:ended` channel, the terminal frame on the job's channel. True when applied."""
    names = [jobs.record_key(keys, ending.job_id), leases_key(keys), expiries_key(keys)]
    if ending.batch_id:
        b = ending.batch_id
        names += [
            batches.record_key(keys, b),
            batches.jobs_key(keys, b),
            batches.index_key(keys, b),
            batches.ended_channel(keys, b),
        ]
    pairs = [str(part) for name, value in ending.fields.items() for part in (name, value)]
    args: list[str | int] = [
        ending.job_id,
        ending.epoch,
        ending.from_state,
        ttl_s,
        streams.channel(keys, ending.job_id),
        ending.frame,
        ending.tokens,
        now_ms,
        keys.prefix,
        ending.prompt_tokens,
        *pairs,
    ]
    return Command((_eval(FINISH, names, args),), lambda replies: bool(replies[0]))


# KEYS: leases, job hash, stream, [batch hash].
# ARGV: job_id, now_ms, max_attempts, requeue_grace_ms, ttl_s.
# A lapsed lease: bump the epoch (fencing the stream at <epoch>-0) and requeue, or fail the job
# once its attempts are spent. The requeued job keeps a grace lease, so that a requeue lost
# between this script and the broker is retried. -> {action, epoch, queue, attempts, priority}
REAP = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return {'live', 0, '', 0, 0} end
local st = redis.call('HMGET', KEYS[2], 'state', 'epoch', 'attempts', 'queue', 'priority')
local from = st[1]
if from ~= 'running' and from ~= 'queued' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return {'gone', 0, '', 0, 0}
end
local epoch = tonumber(st[2]) + 1
local priority = tonumber(st[5] or '5')
redis.call('HSET', KEYS[2], 'epoch', epoch)
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('XSETID', KEYS[3], epoch .. '-0') end
if tonumber(st[3]) >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[2], 'state', 'failed', 'finished_ms', ARGV[2],
             'error', 'the job ran out of attempts: its worker died ' .. st[3] .. ' times',
             'error_code', 'attempts_exhausted')
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  redis.call('ZREM', KEYS[1], ARGV[1])
  if KEYS[4] then
    redis.call('HINCRBY', KEYS[4], from, -1)
    redis.call('HINCRBY', KEYS[4], 'failed', 1)
    redis.call('HSET', KEYS[4], 'finished_ms', ARGV[2])
  end
  return {'failed', epoch, st[4], tonumber(st[3]), priority}
end
redis.call('HSET', KEYS[2], 'state', 'queued')
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[4]), ARGV[1])
if KEYS[4] and from == 'running' then
  redis.call('HINCRBY', KEYS[4], 'running', -1)
  redis.call('HINCRBY', KEYS[4], 'queued', 1)
end
return {'requeue', epoch, st[4], tonumber(st[3]), priority}
"""


# KEYS: leases, job hash, stream, [batch hash]. ARGV: job_id, epoch, now_ms, grace_ms.
# A running attempt gives its job back (its worker shuts down): as REAP's requeue, at once and
# only for that attempt's epoch, and not counted as an attempt (a rolling deploy is no
# failure). -> {action, epoch, queue, attempts, priority}
HANDOFF = """
local st = redis.call('HMGET', KEYS[2], 'state', 'epoch', 'attempts', 'queue', 'priority')
if st[1] ~= 'running' or tonumber(st[2]) ~= tonumber(ARGV[2]) then
  return {'gone', 0, '', 0, 0}
end
local epoch = tonumber(st[2]) + 1
redis.call('HSET', KEYS[2], 'epoch', epoch, 'state', 'queued')
redis.call('HINCRBY', KEYS[2], 'attempts', -1)
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('XSETID', KEYS[3], epoch .. '-0') end
redis.call('ZADD', KEYS[1], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[1])
if KEYS[4] then
  redis.call('HINCRBY', KEYS[4], 'running', -1)
  redis.call('HINCRBY', KEYS[4], 'queued', 1)
end
return {'requeue', epoch, st[4], tonumber(st[3]) - 1, tonumber(st[5] or '5')}
"""


class ReapAction(StrEnum):
    """What REAP did with a job on the lease index."""

    LIVE = "live"  # its lease has not lapsed: untouched
    GONE = "gone"  # it ended or is not kept: dropped from the index
    REQUEUE = "requeue"  # a new epoch, queued again: the caller sends its task message
    FAILED = "failed"  # its attempts are spent: failed, the caller publishes the error


@dataclass(frozen=True)
class Reaped:
    action: ReapAction
    epoch: int
    queue: str
    attempts: int
    priority: int


def reap(
    keys: Keys,
    job_id: str,
    batch_id: str,
    now_ms: int,
    max_attempts: int,
    grace_ms: int,
    ttl_s: int,
) -> Command[Reaped]:
    """Requeue (under a grace lease) or fail a job whose lease lapsed before `now_ms`."""
    names = [leases_key(keys), jobs.record_key(keys, job_id), streams.stream_key(keys, job_id)]
    if batch_id:
        names.append(batches.record_key(keys, batch_id))
    args = [job_id, now_ms, max_attempts, grace_ms, ttl_s]

    def decode(replies: list[Any]) -> Reaped:
        action, epoch, queue, attempts, priority = replies[0]
        return Reaped(ReapAction(action), int(epoch), str(queue), int(attempts), int(priority))

    return Command((_eval(REAP, names, args),), decode)


def hand_off(
    keys: Keys, job_id: str, epoch: int, batch_id: str, now_ms: int, grace_ms: int
) -> Command[Reaped]:
    """Requeue a running job at a new epoch, for the attempt at `epoch` that gives it back;
    GONE when that attempt no longer owns it. The caller sends the task message."""
    names = [leases_key(keys), jobs.record_key(keys, job_id), streams.stream_key(keys, job_id)]
    if batch_id:
        names.append(batches.record_key(keys, batch_id))
    args = [job_id, epoch, now_ms, grace_ms]

    def decode(replies: list[Any]) -> Reaped:
        action, new_epoch, queue, attempts, priority = replies[0]
        return Reaped(ReapAction(action), int(new_epoch), str(queue), int(attempts), int(priority))

    return Command((_eval(HANDOFF, names, args),), decode)


def deadline(keys: Keys, job_id: str) -> Command[int | None]:
    """The deadline (ms) of the job's lease; None while it holds none."""
    call = ("ZSCORE", leases_key(keys), job_id)
    return Command((call,), lambda replies: None if replies[0] is None else int(replies[0]))


def lapsed(keys: Keys, now_ms: int, limit: int) -> Command[list[str]]:
    """Up to `limit` jobs whose lease ended by `now_ms`, for the reaper."""
    call = ("ZRANGEBYSCORE", leases_key(keys), "-inf", now_ms, "LIMIT", 0, limit)
    return Command((call,), lambda replies: [str(j) for j in replies[0]])


def due_expiries(keys: Keys, now_ms: int, limit: int) -> Command[list[str]]:
    """Up to `limit` queued jobs whose expiry time is `now_ms` or earlier, for the expirer."""
    call = ("ZRANGEBYSCORE", expiries_key(keys), "-inf", now_ms, "LIMIT", 0, limit)
    return Command((call,), lambda replies: [str(j) for j in replies[0]])


def drop_expiry(keys: Keys, job_id: str) -> Command[None]:
    """Forget a job's expiry (it started, ended or is gone)."""
    return Command((("ZREM", expiries_key(keys), job_id),), lambda replies: None)


def add_expiry(keys: Keys, job_id: str, expires_ms: int) -> Command[None]:
    """Index a new job's expiry time, for the relay's expirer (CLAIM and FINISH drop it)."""
    return Command((("ZADD", expiries_key(keys), expires_ms, job_id),), lambda replies: None)
