"""The relay, a process of its own (`genq relay`): live frames become durable streams,
windows become checkpoints, and jobs whose lease lapsed are requeued.

Module map:
    service     the relay's loop: read the pub/sub channels, write, reap
    admission   which messages it moves: valid frames of jobs that exist
    shape       its fast path: a token frame recognized by its exact bytes
    writes      each batch of admitted frames as one pipeline of per-job commands
    metrics     its Prometheus metrics
"""
