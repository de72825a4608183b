"""genq's OpenAI-compatible HTTP gateway (`genq serve`): a producer that speaks the OpenAI API
in front of genq's queue, never loading a model.

- app.py          the ASGI app (FastAPI): settings, the shared AsyncClient, routers, errors
- errors.py       OpenAI's error body and the HTTP status of each genq error
- auth.py         Bearer API keys (GENQ_API_KEYS / GENQ_API_KEYS_FILE)
- models.py       GET /v1/models
- completions.py  POST /v1/completions and /v1/chat/completions (SSE or not)
- chunks.py       OpenAI's response and chunk shapes from genq's frames (no I/O)
- streams.py      SSE events after a Last-Event-ID, attach counts, the reattach grace sweep
- jobs.py         GET /v1/jobs/{job_id}/stream (reattach with Last-Event-ID), POST .../cancel
- files.py        /v1/files (JSONL uploads for batches)
- batches.py      /v1/batches on genq's batches
- page.py         GET /: a small page that streams a prompt and survives a reload
"""
