"""Load for the relay benchmark: `python -m ops.bench.publisher URL TAG [options]`.

Publishes token frames of `--jobs` jobs round-robin (each job's `seq` counting up from 1), in
pipelines of `--batch` PUBLISH commands encoded as RESP by hand (little CPU per frame), as
fast as it can for `--seconds`.
It holds back while the pattern subscribers' output buffers in redis-server pass
`--max-buffered-mb`: the load is then exactly what the consumer sustains, and Redis never
disconnects a slow subscriber (client-output-buffer-limit pubsub, 32 MB by default).
`--mode xadd` writes the same frames with pipelined XADD instead (Redis's own XADD rate).
Prints one JSON line: frames published, seconds, seconds held back. Stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import FrameType

import redis

from genq.common.adapters.redis_replies import Replies
from genq.common.store.keys import Keys
from ops.bench.tokenframes import FrameTemplate, templates

SUBSCRIBER_WAIT_S = 30.0
CHECK_EVERY = 4  # batches between looks at the subscribers' output buffers
HOLD_S = 0.002
MB = 1 << 20


@dataclass
class Tally:
    published: int = 0
    seconds: float = 0.0
    held_s: float = 0.0
    errors: int = 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ops.bench.publisher", description=__doc__)
    parser.add_argument("url", help="redis:// URL")
    parser.add_argument("tag", help="names the job ids (ops.bench.tokenframes.job_ids)")
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=500, help="commands per pipeline")
    parser.add_argument("--max-buffered-mb", type=float, default=4.0)
    parser.add_argument("--mode", choices=("publish", "xadd"), default="publish")
    parser.add_argument("--prefix", default="genq", help="genq key prefix")
    return parser.parse_args(argv)


def heads(tpls: Sequence[FrameTemplate], mode: str) -> list[bytes]:
    """Each job's command up to its last argument (the frame, or XADD's id, field, frame)."""
    if mode == "publish":
        return [b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n" % (len(t.channel), t.channel) for t in tpls]
    return [b"*5\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n" % (len(t.stream), t.stream) for t in tpls]


def batch_commands(
    tpls: Sequence[FrameTemplate], cmds: Sequence[bytes], seq: int, rounds: int, mode: str
) -> list[bytes]:
    """`rounds` frames of every job, seqs `seq`...; commands ready to send."""
    ts = b"%d" % (time.time_ns() // 1_000_000)
    out = []
    for n in range(seq, seq + rounds):
        entry = b"0-%d" % n
        for tpl, head in zip(tpls, cmds, strict=True):
            frame = tpl.frame(n, ts)
            if mode == "publish":
                out.append(b"%s$%d\r\n%s\r\n" % (head, len(frame), frame))
            else:
                out.append(
                    b"%s$%d\r\n%s\r\n$1\r\nf\r\n$%d\r\n%s\r\n"
                    % (head, len(entry), entry, len(frame), frame)
                )
    return out


def buffered_bytes(control: redis.Redis) -> int:
    """Output buffer bytes redis-server holds for pub/sub clients."""
    return sum(int(c.get("omem", 0)) for c in control.client_list(_type="pubsub"))


def wait_for_subscriber(control: redis.Redis, stop: threading.Event) -> None:
    deadline = time.monotonic() + SUBSCRIBER_WAIT_S
    while int(control.execute_command("PUBSUB", "NUMPAT")) < 1:  # type: ignore[no-untyped-call]
        if time.monotonic() > deadline or stop.is_set():
            raise SystemExit("publisher: no pattern subscriber showed up")
        time.sleep(0.01)


def run(args: argparse.Namespace, stop: threading.Event) -> Tally:
    tpls = templates(Keys(args.prefix), args.tag, args.jobs)
    cmds = heads(tpls, args.mode)
    control = redis.Redis.from_url(args.url)
    if args.mode == "publish":
        wait_for_subscriber(control, stop)
    loader = redis.Redis.from_url(args.url)
    connection = loader.connection_pool.get_connection()
    replies = Replies(connection)
    rounds = max(1, args.batch // args.jobs)
    tally, seq, batches = Tally(), 1, 0
    started = time.monotonic()
    deadline = started + args.seconds
    while not stop.is_set() and time.monotonic() < deadline:
        out = batch_commands(tpls, cmds, seq, rounds, args.mode)
        connection.send_packed_command([b"".join(out)], check_health=False)  # type: ignore[no-untyped-call]
        tally.errors += sum(isinstance(r, redis.ResponseError) for r in replies.take(len(out)))
        seq, tally.published, batches = seq + rounds, tally.published + len(out), batches + 1
        if args.mode == "publish" and batches % CHECK_EVERY == 0:
            tally.held_s += hold(control, args.max_buffered_mb * MB, stop, deadline)
    tally.seconds = time.monotonic() - started
    loader.close()
    control.close()
    return tally


def hold(control: redis.Redis, limit: float, stop: threading.Event, deadline: float) -> float:
    """Wait while the subscribers are more than `limit` bytes behind; the seconds waited."""
    started = time.monotonic()
    while buffered_bytes(control) > limit and not stop.is_set() and time.monotonic() < deadline:
        time.sleep(HOLD_S)
    return time.monotonic() - started


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(json.dumps(asdict(run(args, stop))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
