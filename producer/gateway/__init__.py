"""genq's OpenAI-compatible HTTP gateway (`genq serve`): a producer that speaks the OpenAI API
in front of genq's queue, never loading a model. Start reading at serving.py.

- app.py          the ASGI app (FastAPI): one Serving per process, the routers, the errors
- routes.py       every /v1 route, a few lines each: it calls the Serving
- serving.py      `Serving`, the one object behind the routes: submit, answer or stream,
                  reattach, cancel; it holds the files, batches, responses and model list
- errors.py       the one error boundary: OpenAI's error body and each failure's status
- records.py      the gateway's own Redis state, behind that boundary (any failure: 503)
- completions.py  the completion and chat requests, and the genq job each asks for
- chunks.py       OpenAI's response and chunk shapes from genq's frames (no I/O)
- streams.py      SSE events after a Last-Event-ID, attach counts, the reattach grace sweep
- models.py       GET /v1/models, the registry cached until its file changes
- files.py        /v1/files (JSONL uploads for batches)
- uploads.py      reading an upload's multipart body, never past GENQ_FILE_BYTES_MAX
- batches.py      /v1/batches on genq's batches
- responses.py    /v1/responses on genq's jobs: background, starting_after, cancel, delete
- response_shapes.py  the Responses API's request, its job, and the response object (no I/O)
- response_events.py  a job's frames as numbered Responses API events (no I/O)
- auth.py         Bearer API keys (GENQ_API_KEYS / GENQ_API_KEYS_FILE)
- page.py         GET /: a small page that streams a prompt and survives a reload
"""
