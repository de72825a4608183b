"""Lua scripts: the few state changes that must be atomic in Redis.

Each touches one job's keys plus the global lease index. They fence by epoch: the job hash's
`epoch` is the attempt allowed to write, and a worker presumed dead that is still running can
neither renew, checkpoint nor finish the job.
"""

from __future__ import annotations

# KEYS: job hash, leases. ARGV: job_id, epoch, now_ms, lease_ms, worker.
# -> claimed | missing | finished | stale | held
CLAIM = """
local st = redis.call('HMGET', KEYS[1], 'state', 'epoch')
if not st[1] then return 'missing' end
if st[1] ~= 'queued' and st[1] ~= 'running' then return 'finished' end
if tonumber(st[2]) ~= tonumber(ARGV[2]) then return 'stale' end
if st[1] == 'running' then
  local lease = redis.call('ZSCORE', KEYS[2], ARGV[1])
  if lease and tonumber(lease) > tonumber(ARGV[3]) then return 'held' end
end
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[5], 'started_ms', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[1])
return 'claimed'
"""

# KEYS: job hash, leases. ARGV: job_id, epoch, deadline_ms. -> 1 renewed, 0 superseded
RENEW = """
local st = redis.call('HMGET', KEYS[1], 'state', 'epoch')
if st[1] ~= 'running' or tonumber(st[2]) ~= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""

# KEYS: job hash, leases. ARGV: job_id, epoch, ttl_s, channel, frame, then field/value pairs.
# The final record and the terminal frame together, only for the current epoch. -> 1 or 0
FINISH = """
if tonumber(redis.call('HGET', KEYS[1], 'epoch')) ~= tonumber(ARGV[2]) then return 0 end
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[4], ARGV[5])
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

# KEYS: leases, job hash, stream. ARGV: job_id, now_ms, max_attempts, requeue_grace_ms, ttl_s.
# A lapsed lease: bump the epoch (fencing the stream at <epoch>-0) and requeue, or fail the job
# once its attempts are spent. The requeued job keeps a grace lease, so that a requeue lost
# between this script and the broker is retried. -> {action, epoch, queue, attempts}
REAP = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return {'live', 0, '', 0} end
local st = redis.call('HMGET', KEYS[2], 'state', 'epoch', 'attempts', 'queue')
if st[1] ~= 'running' and st[1] ~= 'queued' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return {'gone', 0, '', 0}
end
local epoch = tonumber(st[2]) + 1
redis.call('HSET', KEYS[2], 'epoch', epoch)
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('XSETID', KEYS[3], epoch .. '-0') end
if tonumber(st[3]) >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[2], 'state', 'failed', 'finished_ms', ARGV[2],
             'error', 'the job ran out of attempts: its worker died ' .. st[3] .. ' times')
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  redis.call('ZREM', KEYS[1], ARGV[1])
  return {'failed', epoch, st[4], tonumber(st[3])}
end
redis.call('HSET', KEYS[2], 'state', 'queued')
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[4]), ARGV[1])
return {'requeue', epoch, st[4], tonumber(st[3])}
"""
