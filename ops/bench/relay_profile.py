"""Where the relay's time goes: `relay.service.Relay(settings).run(stop)` in a thread of this
process under cProfile, fed by the benchmark's publisher for a few seconds. The parts are
found by function name, in the relay as it is now (its reader was `Relay._read` and may be a
`read` method of a reader class).

cProfile slows pure-Python code more than C code, so shares are indicative; the table names
the functions that cost the most of the relay thread's own time.
"""

from __future__ import annotations

import cProfile
import pstats
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import redis

from genq.common.settings import Settings
from genq.common.store.keys import Keys
from genq.workers.relay.service import Relay
from ops.bench.procs import running
from ops.bench.relay_rate import RelayOptions, publisher, record_jobs
from ops.bench.stack import Stack

TOP = 12
ROOT = Path(__file__).resolve().parents[2]
JOIN_TIMEOUT_S = 10.0
PUBLISHER_EXTRA_S = 3.0  # the publisher starts (imports) while the relay waits
StatKey = tuple[str, int, str]
StatValue = tuple[int, int, float, float, object]
Raw = dict[StatKey, StatValue]
# A part of the loop: functions by (file suffix, name), their cumulative time summed.
READ = (("workers/relay.py", "_read"), ("workers/relay.py", "read"))
PARSE = (("workers/relay_admission.py", "admit"),)
WRITE = (("workers/relay_writes.py", "send"), ("workers/relay_writes.py", "settle"))
REAP = (("workers/relay.py", "reap"),)


class ProfiledRelay(Relay):
    """The relay, profiled from its first batch for `seconds`: the wait for the publisher to
    start is left out. cProfile works per thread, so it is switched in the relay's thread."""

    def __init__(self, settings: Settings, seconds: float) -> None:
        super().__init__(settings)
        self.profiler = cProfile.Profile()
        self.seconds = seconds
        self.frames = 0
        self.profiled_s = 0.0
        self._began: float | None = None

    def send(self, frames: Sequence[bytes]) -> None:
        now = time.monotonic()
        if self._began is None:
            self._began = now
            self.profiler.enable()
        elif not self.profiled_s and now - self._began >= self.seconds:
            self.finish()
        super().send(frames)
        if not self.profiled_s:
            self.frames += len(frames)

    def finish(self) -> None:
        if self._began is not None and not self.profiled_s:
            self.profiler.disable()
            self.profiled_s = time.monotonic() - self._began

    def run_then_finish(self, stop: threading.Event) -> None:
        try:
            self.run(stop)
        finally:
            self.finish()


@dataclass(frozen=True)
class Profile:
    profiled_s: float  # wall time of the relay thread under the profiler
    moved: int
    parts: list[tuple[str, float]]  # what, seconds
    top: list[tuple[str, int, float, float]]  # function, calls, own seconds, cumulative


def profile(stack: Stack, opts: RelayOptions, seconds: float) -> Profile:
    relay = ProfiledRelay(stack.settings, seconds)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run_then_finish, args=(stop,), name="relay")
    client = redis.Redis.from_url(stack.settings.redis_url)
    client.flushdb()
    record_jobs(client, Keys(stack.settings.key_prefix), "profile", opts.jobs)
    thread.start()
    try:
        load = publisher(stack, opts, "profile", seconds + PUBLISHER_EXTRA_S, "publish")
        with running(load) as pub:
            pub.wait(seconds + 30)
    finally:
        stop.set()
        thread.join(JOIN_TIMEOUT_S)
    raw: Raw = pstats.Stats(relay.profiler).stats  # type: ignore[attr-defined]
    return Profile(relay.profiled_s, relay.frames, _parts(raw, relay.profiled_s), _top(raw))


def _parts(raw: Raw, total: float) -> list[tuple[str, float]]:
    read, parse, write, reap = (_cum(raw, f) for f in (READ, PARSE, WRITE, REAP))
    parts = [
        ("pub/sub read (the relay's reader: socket, RESP parsing, message handling)", read),
        ("validation and job lookups (Admission.admit)", parse),
        ("writes (relay_writes.Writer: encode, send, read replies)", write),
        ("reaper (Relay.reap)", reap),
    ]
    return [*parts, ("the rest of the loop", total - sum(part for _, part in parts))]


def _cum(raw: Raw, functions: tuple[tuple[str, str], ...]) -> float:
    return sum(
        cum
        for (path, _line, func), (_cc, _calls, _own, cum, _callers) in raw.items()
        if any(func == name and Path(path).as_posix().endswith(end) for end, name in functions)
    )


def _top(raw: Raw) -> list[tuple[str, int, float, float]]:
    rows = [
        (f"{_short(path)}:{line} {func}", calls, own, cum)
        for (path, line, func), (_cc, calls, own, cum, _callers) in raw.items()
    ]
    return sorted(rows, key=lambda row: row[2], reverse=True)[:TOP]


def _short(path: str) -> str:
    """A path from the repository root or site-packages; builtins as cProfile names them."""
    file = Path(path)
    if "site-packages" in file.parts:
        return "/".join(file.parts[file.parts.index("site-packages") + 1 :])
    if file.is_relative_to(ROOT):
        return file.relative_to(ROOT).as_posix()
    return path


def describe(result: Profile) -> list[str]:
    total = result.profiled_s or 1.0
    lines = [
        f"profile: Relay.run in a thread of this process under cProfile, from its first batch: "
        f"{result.moved:,} frames in {result.profiled_s:.1f} s ({result.moved / total:,.0f}/s "
        "with the profiler's overhead); where the relay thread's time went:"
    ]
    for what, seconds in result.parts:
        lines.append(f"    {seconds / total:6.1%}  {what}")
    lines.append(f"  top {TOP} functions by own time (calls, own s, cumulative s):")
    for name, calls, own, cum in result.top:
        lines.append(f"    {own:6.2f} {cum:6.2f} {calls:>9,}  {name}")
    return lines
