"""genq's Redis state, one module per structure (httpx's pattern: an I/O-free core, two faces).
No module outside this package (and common/adapters, common/connection.py) names a key or
calls a Redis client method: tests/unit/test_redis_boundary.py holds the product to that.

Each structure module owns its key names, the encoding of what it stores and the commands
that read or write it. A command (`Command`) is built without I/O: the Redis calls to make and
a pure function that decodes their replies into a typed value. `run`/`arun` execute one
command, `run_all`/`arun_all` several in one pipeline (one round trip), and
`run_transaction`/`arun_transaction` several in one MULTI/EXEC, on a sync or an async
redis-py client made by common/connection.py.

    record = run(client.redis, jobs.read(client.keys, job_id))

Mechanics: `command` (Command and its runners), `keys` (`Keys`, the prefix every key is named
under), `channels` (PUBLISH as a command; subscriptions to a channel, sync and async, or to a
pattern in bulk), `stream_writes` (the relay's batches of frames, encoded as RESP by hand).

Structures: `jobs` (the job hash `genq:{id}:job` and the cancel key `genq:{id}:cancel`),
`batches` (the batch record `genq:batch:{bid}`, its jobs list, custom_id index, `:ended`
channel and the SUBMIT script); `leases` (the lease and expiry indexes, named in `indexes`,
and the CLAIM, RENEW, FINISH and REAP scripts); `streams` (a job's live channel
`genq:{id}:tokens`, its stream `genq:{id}:stream` with the entry codec, and its checkpoint
list `genq:{id}:ckpt`, with the CHECKPOINT script); `queues` (the broker's queue depths);
`fair` (each model queue's fair share: tenants' waiting sets `genq:fair:<queue>:<tenant>`,
virtual counters and backlog, and the Lua the claim, finish and submit scripts share);
`tenants` (tenants' policies, `genq:tenants`); `presence` (the workers' set `genq:{workers}`
and records); `gateway` (a gateway stream's meta
`genq:{id}:gw`, attach count and the detach index `genq:gw:detach`); `files` (the gateway's
files `genq:file:{id}`, their content and the `genq:files` index); `openai_batches` (the
gateway's record of an OpenAI batch, `genq:openai-batch:{bid}`, and the
`genq:openai-batches` index); `responses` (the gateway's record of a response,
`genq:{id}:resp`).
"""

from genq.common.store.command import (
    Command,
    arun,
    arun_all,
    arun_transaction,
    run,
    run_all,
    run_transaction,
)

__all__ = [
    "Command",
    "arun",
    "arun_all",
    "arun_transaction",
    "run",
    "run_all",
    "run_transaction",
]
