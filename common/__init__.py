"""What producers, workers and the relay share: settings, messages, errors and the store.

Module map:
    settings       the one settings object (GENQ_* variables), every knob bounded and described
    handover       the settings a CLI command hands the process it starts: GENQ_PLAN
    schemas        the versioned messages that cross Redis and Celery
    frames         frame protocol v1: what a job's token channel and stream carry
    errors         genq's one error hierarchy, with wire codes and a retryable flag
    store/         Redis state, one module per structure: commands built without I/O
    connection     Redis connections, and redis-py's errors translated at the boundary
    adapters/      what genq borrows from other libraries' internals, one module each
    celery_config  the Celery configuration producers and workers share
    dispatch       sending generate tasks to the broker
    lifecycle      ending a job: the fenced FINISH, and jobs that never started
    plan           how one worker process runs each model, resolved once
    registry       model names mapped to a backend and its options
    routing        a job's queue (device class and model), what a worker serves
    presence       which workers run now, and which queues they serve
    prompts        prompt rendering and token counting, the same on both sides
    keys           Redis key and channel names
    logs           structured logs: one line per event, with its fields
    gemma, tinymodel, ggufmeta   the built-in models, and a GGUF's metadata
"""
