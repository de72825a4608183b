"""A stream reader for the memory benchmark: `python -m ops.bench.reader` (GENQ_* settings).

Prints `ready` once its client is up, reads a job id on stdin, follows that job's stream with
`Client.job(id).stream()` counting frames (keeping none), and prints one JSON line: frames,
tokens, and the size of the text the stream accumulated (JobStream keeps it, by design).
"""

from __future__ import annotations

import json
import sys

from genq import Client, Settings
from genq.common.frames import TokenFrame

READY = "ready"
TIMEOUT_S = 1800.0


def main() -> int:
    with Client(Settings()) as client:
        client.workers()  # connected before the job starts
        print(READY, flush=True)
        job_id = sys.stdin.readline().strip()
        frames = tokens = 0
        with client.job(job_id).stream(timeout=TIMEOUT_S) as stream:
            for frame in stream:
                frames += 1
                if isinstance(frame, TokenFrame):
                    tokens += len(frame.data.token_ids)
            text = stream.text
            done = {
                "frames": frames,
                "tokens": tokens,
                "text_chars": len(text),
                "text_bytes": len(text.encode()),
                "completion_tokens": stream.result.usage.completion_tokens,
            }
    print(json.dumps(done), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
