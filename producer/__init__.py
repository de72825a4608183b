"""genq's client side: submit generation jobs and stream their tokens (public face: `genq`).

Module map:
    client      `Client` and `AsyncClient`: submit a job, stream it, read its result
    core        what both faces share, with no I/O
    submitter   a job's way into and out of the queue, whoever submits it
    batches     many jobs as one: submit, watch, read back in order, cancel
    batchfile   reading JSONL batch lines (genq's form or OpenAI's)
    bundles     several short jobs of a batch to one task message
    retry       reads that ride through a Redis blip
    progress    the command line's progress bar for batches
    cli/        the `genq` command line
    gateway/    the OpenAI-compatible HTTP gateway (`genq serve`)
"""
