"""Lua scripts: the few state changes that must be atomic in Redis.

Each touches one job's keys plus the global lease index. They fence by epoch: the job hash's
`epoch` is the attempt allowed to write, and a worker presumed dead that is still running can
neither renew, checkpoint nor finish the job.
"""

from __future__ import annotations

# KEYS: checkpoint list, job hash (one job's: the relay pipelines it beside plain XADDs).
# ARGV: epoch, window, entry (JSON).
# Window k is appended only as entry k, only from the job's current epoch, and only while the
# job has a record. -> windows now checkpointed, or -1 (older epoch) / -2 (duplicate or out of
# order) / -3 (no such job)
CHECKPOINT = """
if redis.call('EXISTS', KEYS[2]) == 0 then return -3 end
local epoch = tonumber(redis.call('HGET', KEYS[2], 'epoch') or '0')
if tonumber(ARGV[1]) < epoch then return -1 end
local n = redis.call('LLEN', KEYS[1])
if tonumber(ARGV[2]) ~= n then return -2 end
redis.call('RPUSH', KEYS[1], ARGV[3])
return n + 1
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
