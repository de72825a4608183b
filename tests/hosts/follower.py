"""A client host's stream follower: `python -m tests.hosts.follower URL KEY OUT REATTACH_S`,
the request's JSON body on stdin.

It POSTs a streaming completion to the gateway at URL and writes what it sees to OUT as JSON
lines, each flushed, for the test to read: {"job_id"} first, then {"id", "data"} per SSE
event. When no byte comes for READ_TIMEOUT_S (its host was cut off), it writes {"lost"} and
reattaches with `Last-Event-ID` (GET /v1/jobs/ID/stream), again every RETRY_S while the
outage lasts, up to REATTACH_S. It writes {"done"} at [DONE], {"gave_up"} when REATTACH_S
passes first.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

import httpx

READ_TIMEOUT_S = 2.0  # the gateway sends tokens many times a second
RETRY_S = 0.5


class Sink:
    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.last_id = ""

    def write(self, **line: Any) -> None:
        self.out.write(json.dumps(line) + "\n")
        self.out.flush()

    def follow(self, response: httpx.Response) -> bool:
        """Write the response's events; True at [DONE]."""
        event_id, data = "", ""
        for line in response.iter_lines():
            if line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:"):
                data = line[5:].removeprefix(" ")
            elif line == "" and data:
                self.write(id=event_id, data=data)
                self.last_id = event_id or self.last_id
                if data == "[DONE]":
                    return True
                data = ""
        return False


def run(http: httpx.Client, url: str, body: Any, sink: Sink, reattach_s: float) -> None:
    request = http.build_request("POST", f"{url}/v1/completions", json=body)
    job_id, lost_at = "", None
    while True:
        try:
            response = http.send(request, stream=True)
            try:
                response.raise_for_status()
                if not job_id:
                    job_id = response.headers["x-genq-job-id"]
                    sink.write(job_id=job_id)
                lost_at = None  # connected again: a new outage starts its own count
                if sink.follow(response):
                    sink.write(done=True)
                    return
            finally:
                response.close()
        except httpx.TransportError:
            if not job_id:
                raise  # the submit itself failed: nothing to reattach to
        lost_at = lost_at or time.monotonic()
        sink.write(lost=True)
        if time.monotonic() - lost_at > reattach_s:
            sink.write(gave_up=True)
            return
        time.sleep(RETRY_S)
        headers = {"Last-Event-ID": sink.last_id}
        request = http.build_request("GET", f"{url}/v1/jobs/{job_id}/stream", headers=headers)


def main() -> None:
    url, key, out, reattach_s = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    timeout = httpx.Timeout(READ_TIMEOUT_S, connect=1.0)
    headers = {"Authorization": f"Bearer {key}"}
    with open(out, "a") as sink, httpx.Client(timeout=timeout, headers=headers) as http:
        run(http, url, json.loads(sys.stdin.read()), Sink(sink), reattach_s)


if __name__ == "__main__":
    main()
