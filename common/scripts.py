"""Lua scripts: the few state changes that must be atomic in Redis.

Each touches one job's keys plus the global lease index. They fence by epoch: the job hash's
`epoch` is the attempt allowed to write, and a worker presumed dead that is still running can
neither renew, checkpoint nor finish the job.
"""

from __future__ import annotations

# KEYS: job hash, leases, cancel key, expiries, [batch hash].
# ARGV: job_id, epoch, now_ms, lease_ms, worker.
# -> claimed | missing | finished | stale | held | cancelled | expired
# A queued job whose cancel was asked for, or that was not started before its expiry, is not
# started: the caller ends it (common.lifecycle). A job that started once never expires.
CLAIM = """
local st = redis.call('HMGET', KEYS[1], 'state', 'epoch', 'expires_ms')
if not st[1] then return 'missing' end
if st[1] ~= 'queued' and st[1] ~= 'running' then return 'finished' end
if tonumber(st[2]) ~= tonumber(ARGV[2]) then return 'stale' end
if st[1] == 'running' then
  local lease = redis.call('ZSCORE', KEYS[2], ARGV[1])
  if lease and tonumber(lease) > tonumber(ARGV[3]) then return 'held' end
else
  if redis.call('EXISTS', KEYS[3]) == 1 then return 'cancelled' end
  if KEYS[5] and redis.call('HGET', KEYS[5], 'cancel_requested') == '1' then
    return 'cancelled'
  end
  local expires = tonumber(st[3] or '0')
  if expires > 0 and tonumber(ARGV[3]) >= expires and tonumber(st[2]) == 0 then
    return 'expired'
  end
  if KEYS[5] then
    redis.call('HINCRBY', KEYS[5], 'queued', -1)
    redis.call('HINCRBY', KEYS[5], 'running', 1)
  end
end
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[5], 'started_ms', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return 'claimed'
"""

# KEYS: job hash, leases. ARGV: job_id, epoch, deadline_ms. -> 1 renewed, 0 superseded
RENEW = """
local st = redis.call('HMGET', KEYS[1], 'state', 'epoch')
if st[1] ~= 'running' or tonumber(st[2]) ~= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""

# KEYS: job hash, leases, expiries, [batch hash, batch jobs, batch index].
# ARGV: job_id, epoch, from_state, ttl_s, channel, frame, tokens, now_ms, then field/value
# pairs (`state` among them). The final record and the terminal frame together, only while the
# job is still in `from_state` at this epoch; the batch's counts move with it. -> 1 or 0
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
end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
"""

# KEYS: checkpoint list, job hash. ARGV: epoch, window, entry (JSON).
# Window k is appended only as entry k, and only from the job's current epoch.
# -> windows now checkpointed, or -1 (older epoch) / -2 (duplicate or out of order)
CHECKPOINT = """
local epoch = tonumber(redis.call('HGET', KEYS[2], 'epoch') or '0')
if tonumber(ARGV[1]) < epoch then return -1 end
local n = redis.call('LLEN', KEYS[1])
if tonumber(ARGV[2]) ~= n then return -2 end
redis.call('RPUSH', KEYS[1], ARGV[3])
return n + 1
"""

# KEYS: one stream per frame. ARGV: entry id, frame, entry id, frame, ...
# Appends a batch of frames in one call; an id at or below the stream's last one (a duplicate,
# or an older epoch fenced out) is skipped. -> the other errors, as strings
APPEND = """
local errors = {}
for i = 1, #KEYS do
  local ok = redis.pcall('XADD', KEYS[i], ARGV[2 * i - 1], 'f', ARGV[2 * i])
  if type(ok) == 'table' and ok.err and not string.find(ok.err, 'equal or smaller', 1, true) then
    errors[#errors + 1] = ok.err
  end
end
return errors
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
# batch creates nothing twice. -> the job ids created
SUBMIT = """
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
