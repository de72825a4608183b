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
