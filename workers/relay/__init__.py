"""The relay, a process of its own (`genq relay`): live frames become durable streams,
windows become checkpoints, and jobs whose lease lapsed are requeued.

Module map:
    service     the relay's loop: read the pub/sub channels, write, reap
    admission   which messages it moves: valid frames of jobs that exist (the writes are
                the store's: genq.common.store.stream_writes)
    shape       its fast path: a token frame recognized by its exact bytes
    metrics     its Prometheus metrics
"""
