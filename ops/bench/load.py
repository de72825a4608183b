"""The relay section's load and raw baselines: `python -m ops.bench.load MODE URL KEY_FORMAT
SECONDS JOB_ID...`, speaking RESP over a plain socket (little CPU per frame); one JSON line at
the end.

- `publish`: 16-token frames of every job round-robin (seq counting up from 1), PUBLISHed in
  pipelines on `KEY_FORMAT % job_id`, held back while redis-server buffers over 4 MB for
  pub/sub clients (the load is what the consumer sustains, and Redis never cuts it off);
- `xadd`: the same frames XADDed in pipelines to `KEY_FORMAT % job_id` (Redis's own rate);
- `subscribe`: PSUBSCRIBE `KEY_FORMAT` and count the messages into the key `bench:counted`.

A frame is what a worker publishes (genq.common.frames), built once per job by pydantic and
cut around its `seq` and `ts_ms`.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

import redis

from genq.common.frames import TokenData, TokenFrame

COUNTER = "bench:counted"
BATCH = 500  # commands per pipeline
MAX_BUFFERED = 4 << 20
CHUNK_TEXT = "▁the quick brown fox über naïve café 日本語 jumps over"
_SEQ, _TS = 987_654_321_987, 123_456_789_123  # stand-ins while a frame is cut


def frame(job_id: str, seq: int, ts_ms: int) -> bytes:
    data = TokenData(text=CHUNK_TEXT, token_ids=list(range(300, 316)))
    return (
        TokenFrame(job_id=job_id, epoch=0, seq=seq, ts_ms=ts_ms, data=data)
        .model_dump_json()
        .encode()
    )


def bulk(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def commands(mode: str, key_format: str, job_ids: Sequence[str]) -> list[tuple[bytes, ...]]:
    """Each job's command, key and frame cut as head + seq + middle + ts + tail."""
    cut: list[tuple[bytes, ...]] = []
    for job_id in job_ids:
        head, rest = frame(job_id, _SEQ, _TS).split(b"%d" % _SEQ)
        middle, tail = rest.split(b"%d" % _TS)
        cut.append((mode.upper().encode(), (key_format % job_id).encode(), head, middle, tail))
    return cut


def batch(cut: list[tuple[bytes, ...]], seq: int, rounds: int) -> bytes:
    """`rounds` frames of every job from `seq`, XADD with the seq as its entry id."""
    ts = b"%d" % (time.time_ns() // 1_000_000)
    out = []
    for n in range(seq, seq + rounds):
        for command, key, head, middle, tail in cut:
            body = b"%s%d%s%s%s" % (head, n, middle, ts, tail)
            entry = (b"0-%d" % n, b"f") if command == b"XADD" else ()
            out.append(bulk(command, key, *entry, body))
    return b"".join(out)


def connect(url: str) -> tuple[redis.Redis, socket.socket]:
    """A client for control, and a plain socket (the stack's own redis-server: db 0)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379))
    return redis.Redis.from_url(url), sock


def drain(sock: socket.socket, lines: int) -> None:
    """Read replies until `lines` lines have come (':n' is one line, '$n id' two)."""
    while lines > 0:
        data = sock.recv(1 << 20)
        if not data or b"-ERR" in data:
            raise SystemExit(f"load: redis answered {data[:200]!r}")
        lines -= data.count(b"\r\n")


def produce(
    mode: str, url: str, keys: str, seconds: float, jobs: Sequence[str], stopped: list[bool]
) -> dict[str, float]:
    cut, (control, sock) = commands(mode, keys, jobs), connect(url)
    rounds = max(1, BATCH // len(jobs))
    seq, sent, held = 1, 0, 0.0
    started = time.monotonic()
    while not stopped and time.monotonic() - started < seconds:
        sock.sendall(batch(cut, seq, rounds))
        drain(sock, rounds * len(cut) * (1 if mode == "publish" else 2))
        seq, sent = seq + rounds, sent + rounds * len(cut)
        if mode == "publish" and seq % (4 * rounds) == 1:
            began = time.monotonic()
            while _buffered(control) > MAX_BUFFERED and time.monotonic() - started < seconds:
                time.sleep(0.002)
            held += time.monotonic() - began
    return {"published": sent, "seconds": time.monotonic() - started, "held_s": held}


def _buffered(control: redis.Redis) -> int:
    return sum(int(c.get("omem", 0)) for c in control.client_list(_type="pubsub"))


def subscribe(url: str, keys: str, stopped: list[bool]) -> dict[str, float]:
    """Count messages by their `pmessage` header; the count into COUNTER every 0.1 s."""
    control, sock = connect(url)
    sock.sendall(bulk(b"PSUBSCRIBE", keys.replace("%s", "*").encode()))
    sock.settimeout(0.1)
    counted, told, tail = 0, 0, b""
    print("subscribed", flush=True)
    while not stopped:
        try:
            data = tail + sock.recv(1 << 20)
        except TimeoutError:
            data = tail
        tail = data[-12:]
        counted += data.count(b"\r\npmessage\r\n") - tail.count(b"\r\npmessage\r\n")
        if counted != told:
            control.set(COUNTER, counted)
            told = counted
    return {"counted": counted}


if __name__ == "__main__":
    stopped: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
    mode, url, keys, seconds, *jobs = sys.argv[1:]
    if mode == "subscribe":
        done = subscribe(url, keys, stopped)
    else:
        done = produce(mode, url, keys, float(seconds), jobs, stopped)
    print(json.dumps(done), flush=True)
