"""genq's worker side: Celery workers that run generation jobs, and the relay.

Package map (a newcomer reads `celery/tasks.py`, then `celery/jobs.py`, then `generation/loop.py`):
    app           the Celery app: `celery -A genq.workers.app worker` (or `genq worker`)
    celery/       the Celery glue: tasks, one job attempt's life, leases, hand-off, presence,
                  admission and Flower's progress
    generation/   the backend-independent generation loop: continuation windows, resume from
                  the durable stream, chunks and text
    publishing/   an attempt's frames on its channel, finished jobs' outbox, metrics
    backends/     the models a process has loaded: a local GGUF (llama) or a remote server
    runtime/      the llama.cpp runner: the batch-invariant engine, its context and sampler
    relay/        the relay process: live frames into durable streams and checkpoints
"""
