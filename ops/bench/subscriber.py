"""The relay's read half alone: `python -m ops.bench.subscriber COUNTER` (GENQ_* settings).

It runs the relay's own loop (`workers.relay.service.Relay.run`: its pub/sub reader, batching and
reaper), whatever the relay's read path is, with `write` replaced by adding the batch's size
to the COUNTER key: a subscriber that only counts, at the relay's reading speed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from genq.common.settings import Settings
from genq.workers.relay.service import Relay


class CountingRelay(Relay):
    """The relay's loop with its writes replaced by a count on the COUNTER key."""

    def __init__(self, settings: Settings, counter: str) -> None:
        super().__init__(settings)
        self._counter = counter

    def send(self, frames: Sequence[bytes]) -> None:
        self.redis.incrby(self._counter, len(frames))
        self.moved += len(frames)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.bench.subscriber", description=__doc__)
    parser.add_argument("counter", help="key the count is added to")
    args = parser.parse_args(argv)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    CountingRelay(Settings(), args.counter).run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
