"""genq's client side: submit generation jobs and stream their tokens (public face: `genq`).

Module map (the sync and async faces over one I/O-free core):
    client      `Client` and `AsyncClient`: submit a job or a batch, cancel, read records
    handles     `JobHandle`, `AsyncJobHandle`: a job: its streams, result and cancel
    streams     `JobStream`, `AsyncJobStream`: one reading of a job's frames
    batches     `BatchHandle`, `AsyncBatchHandle`: a batch: status, wait, results, cancel
    listeners   a batch's ended channel, listened to while a batch handle waits
    transport   how each face runs the store's commands (reads retried, writes once)
    core        what both faces share, with no I/O: a job's preparation, a stream's folding
    reading     reading job streams, with no I/O (one stream, or several at once)
    waiting     waiting on a batch, with no I/O (deadline, result pages, announcements)
    submitter   a job's way into and out of the queue, whoever submits it
    submission  submitting a batch: every line checked, then written and dispatched in chunks
    batchfile   reading JSONL batch lines (genq's form or OpenAI's)
    bundles     several short jobs of a batch to one task message
    retry       reads that ride through a Redis blip
    progress    the command line's progress bar for batches
    cli/        the `genq` command line
    gateway/    the OpenAI-compatible HTTP gateway (`genq serve`)
"""
