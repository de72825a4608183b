"""The Celery glue: what a worker process does with a task message.

Module map:
    tasks       the Celery tasks (`genq.generate`, `genq.generate_bundle`): ids in, attempts run
    jobs        one job attempt: claim it (an epoch, a lease), resume, run, finish
    lease       running jobs' leases, renewed from one heartbeat thread
    handoff     hand-off on shutdown: a draining worker requeues its jobs
    takeback    task messages taken when Redis was lost, sent again once it is back
    heartbeat   the worker's presence in Redis
    admission   a message is taken only when its model has a free slot
    progress    what Flower shows of a running job
"""
