"""The benchmark's helper processes, each a process of its own as a user's would be: `python -m
ops.bench.child ROLE ARGS...` (GENQ_* settings from the environment), one JSON line at the end.

The relay section's load and raw baselines (`publish`, `xadd`: URL KEY_FORMAT SECONDS
JOB_ID...; `subscribe` URL KEY_FORMAT) speak RESP over a plain socket (little CPU per frame).
A frame is what a worker publishes (genq.common.frames), built once per job by pydantic and
cut around its `seq` and `ts_ms`.
"""

from __future__ import annotations

import json
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis

from genq import Client, JobSpec, Settings
from genq.common.frames import TokenData, TokenFrame
from genq.common.registry import ModelRegistry

READY = "ready"
TIMEOUT_S = 1800.0
COUNTER = "bench:counted"
BATCH = 500  # commands per pipeline
MAX_BUFFERED = 4 << 20
CHUNK_TEXT = "▁the quick brown fox über naïve café 日本語 jumps over"
_SEQ, _TS = 987_654_321_987, 123_456_789_123  # stand-ins while a frame is cut


def reader(client: Client) -> dict[str, Any]:
    """Prints `ready`, reads a job id on stdin and follows the job's stream counting frames
    (keeping none); the text's size is what the stream keeps by design."""
    print(READY, flush=True)
    frames = tokens = 0
    with client.job(sys.stdin.readline().strip()).stream(timeout=TIMEOUT_S) as stream:
        for frame in stream:
            frames += 1
            tokens += len(frame.data.token_ids) if isinstance(frame, TokenFrame) else 0
        made, text = stream.result.usage.completion_tokens, stream.text
    sizes = {"text_chars": len(text), "text_bytes": len(text.encode())}
    return {"frames": frames, "tokens": tokens, "completion_tokens": made, **sizes}


def batch(client: Client, path: str) -> dict[str, Any]:
    """One `Client.submit_batch(FILE)`, timed."""
    started = time.perf_counter()
    handle = client.submit_batch(path)
    seconds = time.perf_counter() - started
    return {"jobs": handle.submission.created, "seconds": seconds, "batch_id": handle.batch_id}


def single(client: Client, path: str, count: str) -> dict[str, Any]:
    """`Client.submit()` for each of FILE's first N lines, parsed before the clock starts."""
    with Path(path).open() as file:
        lines = [json.loads(line) for _, line in zip(range(int(count)), file, strict=False)]
    jobs = [{k: v for k, v in line.items() if k != "custom_id"} for line in lines]
    started = time.perf_counter()
    for fields in jobs:
        client.submit(**fields)
    return {"jobs": len(jobs), "seconds": time.perf_counter() - started}


def generate(model: str, first: str, jobs: str, tokens: str, prompt: str) -> dict[str, Any]:
    """Loads the model with llama-cpp-python alone, prints `ready`, waits for a line on stdin
    (the parent starts every such process at once), then runs JOBS jobs back to back, seeds
    FIRST, FIRST + 1, ...: its span in wall-clock seconds (comparable across processes)."""
    from ops.bench import paths  # llama_cpp: this role alone loads it

    registry = ModelRegistry.from_settings(Settings())
    job = JobSpec(model=model, prompt=prompt, max_tokens=int(tokens), ignore_eos=True)
    seeds = range(int(first), int(first) + int(jobs))
    specs = [job.model_copy(update={"seed": seed}) for seed in seeds]
    with paths.loaded(registry.local_path(model), registry.llama(model)) as llm:
        print(READY, flush=True)
        sys.stdin.readline()
        start = time.time()
        made = sum(paths.generate(llm, spec).tokens for spec in specs)
        end = time.time()
    return {"start": start, "end": end, "jobs": len(specs), "tokens": made}


def status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in KiB."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status[field].split()[0])


def frame(job_id: str, seq: int, ts_ms: int) -> bytes:
    data = TokenData(text=CHUNK_TEXT, token_ids=list(range(300, 316)))
    token = TokenFrame(job_id=job_id, epoch=0, seq=seq, ts_ms=ts_ms, data=data)
    return token.model_dump_json().encode()


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


def pipeline(cut: list[tuple[bytes, ...]], seq: int, rounds: int) -> bytes:
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
    """16-token frames of every job round-robin (seq counting up from 1) in pipelines: XADDed
    to `keys % job_id` (Redis's own rate), or PUBLISHed on it, held back while redis-server
    buffers over 4 MB for pub/sub clients (the load is what the consumer sustains, and Redis
    never cuts it off)."""
    cut, (control, sock) = commands(mode, keys, jobs), connect(url)
    rounds = max(1, BATCH // len(jobs))
    seq, sent = 1, 0
    started = time.monotonic()
    while not stopped and time.monotonic() - started < seconds:
        sock.sendall(pipeline(cut, seq, rounds))
        drain(sock, rounds * len(cut) * (1 if mode == "publish" else 2))
        seq, sent = seq + rounds, sent + rounds * len(cut)
        if mode == "publish" and seq % (4 * rounds) == 1:
            while _buffered(control) > MAX_BUFFERED and time.monotonic() - started < seconds:
                time.sleep(0.002)
    return {"published": sent, "seconds": time.monotonic() - started}


def _buffered(control: redis.Redis) -> int:
    return sum(int(c.get("omem", 0)) for c in control.client_list(_type="pubsub"))


def subscribe(url: str, keys: str, stopped: list[bool]) -> dict[str, float]:
    """PSUBSCRIBE `keys` and count messages by their `pmessage` header; the count into COUNTER
    every 0.1 s."""
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


def main(role: str, args: list[str]) -> dict[str, Any]:
    """A producer's RSS is printed after imports, with the client connected, and at its peak:
    VmHWM, the process's own (ru_maxrss, printed too, carries the parent's peak across fork
    and exec on Linux)."""
    if role == "generate":
        return generate(*args)
    if role in {"publish", "xadd", "subscribe"}:
        stopped: list[bool] = []  # a load ends its round on SIGTERM, and prints what it did
        signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
        if role == "subscribe":
            return subscribe(args[0], args[1], stopped)
        return produce(role, args[0], args[1], float(args[2]), args[3:], stopped)
    imports_kib = status_kib("VmRSS")
    with Client(Settings()) as client:
        client.workers()  # connected before the clock starts, as a long-lived producer is
        ready_kib = status_kib("VmRSS")
        roles: dict[str, Callable[..., dict[str, Any]]] = {"reader": reader, "batch": batch}
        done: dict[str, Any] = (roles | {"single": single})[role](client, *args)
    if role == "reader":
        return done
    return done | {
        "imports_kib": imports_kib,
        "ready_kib": ready_kib,
        "peak_kib": status_kib("VmHWM"),
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,  # KiB on Linux
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2:])), flush=True)
