"""Lua scripts: the few state changes that must be atomic in Redis.

Each touches one job's keys plus the global lease index. They fence by epoch: the job hash's
`epoch` is the attempt allowed to write, and a worker presumed dead that is still running can
neither renew, checkpoint nor finish the job.
"""

from __future__ import annotations

# KEYS: leases, expiries, [batch hash], then per job: job hash, cancel key.
# ARGV: now_ms, lease_ms, worker, has_batch (1 or 0), then per job: job_id, epoch.
# -> per job: an outcome (claimed | missing | finished | stale | held | cancelled | expired),
# then the job's hash when claimed (else an empty list). One call claims a bundle's jobs, each
# under its own lease, and reads their records. A queued job whose cancel was asked for, or
# that was not started before its expiry, is not started: the caller ends it
# (common.lifecycle). A job that started once never expires.
CLAIM = """
local now, lease_ms, worker = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local batch, first = nil, 3
if ARGV[4] == '1' then batch, first = KEYS[3], 4 end
local flag = batch and redis.call('HGET', batch, 'cancel_requested')
local batch_cancelled = flag == '1' or flag == 'True'  -- 'True': genq's earlier spelling

local function claim(job, cancel, id, epoch)
  local st = redis.call('HMGET', job, 'state', 'epoch', 'expires_ms')
  if not st[1] then return 'missing' end
  if st[1] ~= 'queued' and st[1] ~= 'running' then return 'finished' end
  if tonumber(st[2]) ~= epoch then return 'stale' end
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
  end
  redis.call('HSET', job, 'state', 'running', 'worker', worker, 'started_ms', ARGV[1])
  redis.call('HINCRBY', job, 'attempts', 1)
  redis.call('ZADD', KEYS[1], now + lease_ms, id)
  redis.call('ZREM', KEYS[2], id)
  return 'claimed'
end

local out = {}
for i = first, #KEYS, 2 do
  local n = 5 + (i - first)
  local outcome = claim(KEYS[i], KEYS[i + 1], ARGV[n], tonumber(ARGV[n + 1]))
  out[#out + 1] = outcome
  out[#out + 1] = outcome == 'claimed' and redis.call('HGETALL', KEYS[i]) or {}
end
return out
"""

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

# KEYS: job hash, leases, expiries, [batch hash, batch jobs, batch index, batch ended channel].
# ARGV: job_id, epoch, from_state, ttl_s, channel, frame, tokens, now_ms, then field/value
# pairs (`state` among them). The final record and the terminal frame together, only while the
# job is still in `from_state` at this epoch; the batch's counts move with it, and the job id
# goes out on the batch's channel (a channel, listed in KEYS for its slot). -> 1 or 0
FINISH = """
local st = redis.call('HMGET', KEYS[1], 'state', 'epoch')
if st[1] ~= ARGV[3] or tonumber(st[2]) ~= tonumber(ARGV[2]) then return 0 end
for i = 9, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
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

# KEYS: batch hash, batch jobs, batch index, expiries, then one job hash per job.
# ARGV: ttl_s, then per job: custom_id, job_id, expires_ms, record (JSON object of strings).
# Creates the jobs whose custom_id the batch does not have yet, in order; resubmitting a
# batch creates nothing twice. -> the job ids created; nil (nothing written) when the batch
# was cancelled, so that no job joins a cancelled batch.
SUBMIT = """
local flag = redis.call('HGET', KEYS[1], 'cancel_requested')
if flag == '1' or flag == 'True' then return false end
local created = {}
for i = 5, #KEYS do
  local a = (i - 5) * 4
  if redis.call('HSETNX', KEYS[3], ARGV[a + 2], ARGV[a + 3]) == 1 then
    local flat = {}
    for name, value in pairs(cjson.decode(ARGV[a + 5])) do
      flat[#flat + 1] = name
      flat[#flat + 1] = value
    end
    redis.call('HSET', KEYS[i], unpack(flat))
    redis.call('EXPIRE', KEYS[i], ARGV[1])
    redis.call('RPUSH', KEYS[2], ARGV[a + 3])
    if tonumber(ARGV[a + 4]) > 0 then redis.call('ZADD', KEYS[4], ARGV[a + 4], ARGV[a + 3]) end
    created[#created + 1] = ARGV[a + 3]
  end
end
if #created > 0 then
  redis.call('HINCRBY', KEYS[1], 'total', #created)
  redis.call('HINCRBY', KEYS[1], 'queued', #created)
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
return created
"""
