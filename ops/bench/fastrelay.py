"""A prototype relay for the benchmark: `python -m ops.bench.fastrelay` (GENQ_* settings).

It is workers/relay.py's `Relay` (same loop, reader, reaper and reconnects) with `write`
replaced, to measure changes to the write half:

- token frames stay bytes: the header regex's groups become the stream key and entry id by
  concatenation, and the commands are encoded as RESP by hand (no `Header` object, no str
  formatting, no redis-py command packing, per frame);
- plain XADDs, one per frame, pipelined on one connection (`--script`: the relay's APPEND
  script, one call per batch, instead). A script call naming many jobs' streams is refused
  by Redis Cluster (CROSSSLOT) unless they share a slot; plain XADDs have no such limit;
- one batch in flight: a batch is sent, and its replies read only after the next batch is
  sent, so the relay reads and parses while Redis appends (`--in-flight 0`: off).

Frames that need more than an append (`window`: checkpoint first; `done`/`error`: expiry)
wait for the batch in flight and go through the real `Relay.write`, so their order and
effects are the real relay's. Not meant to replace workers/relay.py as is.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading
from collections import deque
from collections.abc import Sequence
from types import FrameType as StackFrame

import redis

from common.scripts import APPEND
from common.settings import Settings
from ops.bench import resp
from workers.relay import Relay

log = logging.getLogger("genq.bench.fastrelay")
READY = "relay: moving frames"  # the real relay's log line, from its run loop
XADD = b"*5\r\n$4\r\nXADD\r\n"
FENCED = b"equal or smaller"  # XADD's refusal of an id at or below the stream's last
_PLAIN = re.compile(
    rb'^\{"v":1,"job_id":"([0-9a-f]{32})","epoch":(\d+),"seq":(\d+),"ts_ms":\d+,'
    rb'"type":"(?:token|continuation|resume)"'
)


class FastRelay(Relay):
    def __init__(self, settings: Settings, in_flight: int = 1, script: bool = False) -> None:
        super().__init__(settings)
        self._keep, self._xadd = in_flight, not script
        self._sha = self.redis.script_load(APPEND).encode()
        self._sock = resp.connect(settings.redis_url)
        self._replies = resp.Replies(self._sock)
        self._in_flight: deque[int] = deque()  # replies owed, per batch sent
        prefix = settings.key_prefix.encode()
        self._key_head, self._key_tail = prefix + b":{", b"}:stream"

    def write(self, frames: Sequence[bytes]) -> None:
        keys: list[bytes] = []
        args: list[bytes] = []
        for raw in frames:
            match = _PLAIN.match(raw)
            if match is None:  # a window or terminal frame, or not a genq frame
                self._send(keys, args)
                self._drain(0)
                keys, args = [], []
                super().write([raw])
                continue
            job, epoch, seq = match.groups()
            key = self._key_head + job + self._key_tail
            entry = epoch + b"-" + seq
            keys.append(b"$%d\r\n%s\r\n" % (len(key), key))
            args.append(b"$%d\r\n%s\r\n" % (len(entry), entry))
            args.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
        self._send(keys, args)
        self._drain(self._keep)

    def _send(self, keys: list[bytes], args: list[bytes]) -> None:
        """One EVALSHA <APPEND> n key... (id frame)..., or one XADD per frame; the replies
        are read later."""
        if not keys:
            return
        if self._xadd:
            parts = [
                b"%s%s%s$1\r\nf\r\n%s" % (XADD, key, args[2 * n], args[2 * n + 1])
                for n, key in enumerate(keys)
            ]
            self._in_flight.append(len(keys))
        else:
            count = b"%d" % len(keys)
            head = b"*%d\r\n$7\r\nEVALSHA\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
                3 + 3 * len(keys),
                len(self._sha),
                self._sha,
                len(count),
                count,
            )
            parts = [head, *keys, *args]
            self._in_flight.append(1)
        self._sock.sendall(b"".join(parts))
        self.moved += len(keys)

    def _drain(self, keep: int) -> None:
        """Read replies until at most `keep` batches are unanswered; log what failed (an XADD
        refused as a duplicate or of a fenced epoch is expected)."""
        while len(self._in_flight) > keep:
            self._replies.read(self._in_flight.popleft())
        for error in self._replies.errors:
            if FENCED not in error:
                log.error("fastrelay: write failed: %s", error.decode(errors="replace"))
        self._replies.errors.clear()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.bench.fastrelay", description=__doc__)
    parser.add_argument(
        "--in-flight", type=int, default=1, help="batches left unanswered (1; 0: none)"
    )
    parser.add_argument(
        "--script",
        action="store_true",
        help="one APPEND script call per batch (as workers/relay.py) instead of one XADD per frame",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()

    def _stop(signum: int, frame: StackFrame | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        FastRelay(Settings(), args.in_flight, args.script).run(stop)
    except redis.RedisError as exc:
        log.error("fastrelay: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
