"""Relay throughput: how many token frames per second the relay moves from pub/sub into the
jobs' streams, sustained, against baselines taken in the same run on the same redis-server.

Load: `ops.bench.publisher` (realistic 16-token frames of many jobs, pipelined PUBLISH, held
back while the subscriber is more than a few MB behind, so the load is what the consumer
sustains). Progress is read from Redis: the sum of the streams' XLEN for relays, a counter
for the read half alone.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import redis

from genq.common.store import jobs as job_store
from genq.common.store import streams as stream_store
from genq.common.store.keys import Keys
from genq.workers.relay.service import BATCH_FRAMES, Relay
from ops.bench.procs import BenchProcess, running
from ops.bench.sampling import CpuClock, Rate, merge, sample_while, steady_rate, wait_until
from ops.bench.stack import Stack
from ops.bench.tokenframes import job_ids, templates
from ops.localstack import StackError

TARGET_FPS = 100_000
TARGET_OF_XADD = 0.6  # and at least this share of raw pipelined XADD in the same run
DRAIN_TIMEOUT_S = 20.0
COUNTER = "bench:counted"
TURNS = 2  # every phase runs in this many turns, alternating with the others
PUBLISHER_SLACK_S = 30.0  # beyond its own --seconds, for its start and last pipeline
HOP_PAUSE_S = 0.01  # between the frames of the hop latency run
HOP_TIMEOUT_MS = 2000


@dataclass(frozen=True)
class RelayOptions:
    seconds: float  # the relays' sustained runs
    baseline_seconds: float
    jobs: int
    batch: int


@dataclass(frozen=True)
class Figure:
    name: str
    rate: Rate | None
    published: int | None = None  # frames the publisher sent; None for in-process writes
    complete: bool | None = None  # every one of them arrived

    @property
    def per_s(self) -> float:
        return self.rate.per_s if self.rate is not None else 0.0


Consumer = Callable[[Stack, str], AbstractContextManager[int]]  # stack, tag -> its pid
Measure = Callable[[Stack, "RelayOptions", float], "Figure"]  # one phase for so many seconds


@contextmanager
def relay_reader(stack: Stack, tag: str) -> Iterator[int]:
    """The relay's loop with writes replaced by a count (ops/bench/subscriber.py)."""
    log = stack.cache / f"subscriber-{tag}.log"
    with running(BenchProcess("ops.bench.subscriber", [COUNTER], log, stack.env)) as proc:
        yield proc.pid


@contextmanager
def genq_relay(stack: Stack, tag: str) -> Iterator[int]:
    relay = stack.start_relay()
    try:
        if relay.proc is None:
            raise StackError("the relay did not start")
        yield relay.proc.pid
    finally:
        relay.stop()


def record_jobs(client: redis.Redis, keys: Keys, tag: str, jobs: int) -> None:
    """A record for each of the load's jobs: the relay moves only frames of jobs that exist."""
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids(tag, jobs):
        pipe.hset(job_store.record_key(keys, job_id), mapping={"state": "running", "epoch": 0})
    pipe.execute()


def stream_progress(client: redis.Redis, keys: Keys, tag: str, jobs: int) -> Callable[[], int]:
    streams = [stream_store.stream_key(keys, job_id) for job_id in job_ids(tag, jobs)]

    def count() -> int:
        pipe = client.pipeline(transaction=False)
        for stream in streams:
            pipe.xlen(stream)
        return sum(pipe.execute())

    return count


def counter_progress(client: redis.Redis) -> Callable[[], int]:
    return lambda: int(client.get(COUNTER) or 0)


@dataclass(frozen=True)
class Phase:
    name: str
    tag: str  # names the phase's job ids and log files
    consumer: Consumer
    counted: bool  # progress from the subscriber's counter, else from the streams


def pubsub_phase(phase: Phase, stack: Stack, opts: RelayOptions, seconds: float) -> Figure:
    """The publisher against one consumer, for `seconds`."""
    name, tag, consumer, counted = phase.name, phase.tag, phase.consumer, phase.counted
    client = redis.Redis.from_url(stack.settings.redis_url)
    client.flushdb()  # the last phase's streams: memory, and its counter
    keys = Keys(stack.settings.key_prefix)
    record_jobs(client, keys, tag, opts.jobs)
    progress = (
        counter_progress(client) if counted else stream_progress(client, keys, tag, opts.jobs)
    )
    with consumer(stack, tag) as consumer_pid:
        load = publisher(stack, opts, tag, seconds, "publish")
        with running(load):
            pids = {
                "consumer": consumer_pid,
                "redis-server": _redis_pid(stack),
                "publisher": load.pid,
            }
            samples = sample_while(load.running, progress, CpuClock(pids))
            load.wait(PUBLISHER_SLACK_S)
        published = _published(load)
        complete = wait_until(progress, published, DRAIN_TIMEOUT_S)
    client.close()
    return Figure(name, steady_rate(samples), published, complete)


def xadd_phase(stack: Stack, opts: RelayOptions, seconds: float) -> Figure:
    """Redis's own rate for pipelined XADD of the same frames from a raw client."""
    tag = "xadd"
    client = redis.Redis.from_url(stack.settings.redis_url)
    client.flushdb()
    progress = stream_progress(client, Keys(stack.settings.key_prefix), tag, opts.jobs)
    load = publisher(stack, opts, tag, seconds, "xadd")
    with running(load):
        pids = {"client": load.pid, "redis-server": _redis_pid(stack)}
        samples = sample_while(load.running, progress, CpuClock(pids))
    client.close()
    return Figure(XADD_NAME, steady_rate(samples))


def write_phase(stack: Stack, opts: RelayOptions, seconds: float) -> Figure:
    """`Relay.write` in this process on batches of BATCH_FRAMES ready frames: the relay's
    write half alone (validation, XADD pipeline, replies read), one batch at a time."""
    client = redis.Redis.from_url(stack.settings.redis_url)
    client.flushdb()
    relay = Relay(stack.settings)
    keys = Keys(stack.settings.key_prefix)
    record_jobs(client, keys, "write", opts.jobs)
    tpls = templates(keys, "write", opts.jobs)
    rounds = max(1, BATCH_FRAMES // opts.jobs)
    ts = b"%d" % (time.time_ns() // 1_000_000)
    busy, frames, seq, intervals = 0.0, 0, 1, []
    clock = CpuClock({"this process": os.getpid(), "redis-server": _redis_pid(stack)})
    before, began = clock.read(), time.perf_counter()
    while busy < seconds:
        batch = [t.frame(n, ts) for n in range(seq, seq + rounds) for t in tpls]
        started = time.perf_counter()
        relay.write(batch)
        took = time.perf_counter() - started
        busy, frames, seq = busy + took, frames + len(batch), seq + rounds
        intervals.append(len(batch) / took)
    after, wall = clock.read(), time.perf_counter() - began
    cpu = {role: (after[role] - before[role]) / wall for role in before}
    rate = Rate(frames / busy, tuple(intervals), busy, cpu)
    return Figure(WRITE_NAME, rate)


def publisher(
    stack: Stack, opts: RelayOptions, tag: str, seconds: float, mode: str
) -> BenchProcess:
    args = [
        stack.settings.redis_url,
        tag,
        "--jobs",
        str(opts.jobs),
        "--seconds",
        str(seconds),
        "--batch",
        str(opts.batch),
        "--mode",
        mode,
        "--prefix",
        stack.settings.key_prefix,
    ]
    return BenchProcess("ops.bench.publisher", args, stack.cache / f"publisher-{tag}.log")


def _published(load: BenchProcess) -> int:
    """Frames the publisher says it sent; StackError with its output if it said nothing."""
    output = load.output()
    try:
        return int(json.loads(output.splitlines()[-1])["published"])
    except (IndexError, KeyError, ValueError):
        raise StackError(f"the publisher failed; its output:\n{output[-2000:]}") from None


def _redis_pid(stack: Stack) -> int:
    if stack.redis.proc is None:
        raise StackError("redis-server is not running")
    return stack.redis.proc.pid


def measure(stack: Stack, opts: RelayOptions) -> list[Figure]:
    """Every phase in TURNS turns, in order (baselines: read half, write half, Redis alone;
    then the relay), so that drift in the machine's speed weighs on all."""
    base, main = opts.baseline_seconds / TURNS, opts.seconds / TURNS
    plan: list[tuple[Measure, float]] = [
        (_pubsub(RELAY_READ), base),
        (write_phase, base),
        (xadd_phase, base),
        (_pubsub(GENQ_RELAY), main),
    ]
    runs: list[list[Figure]] = [[] for _ in plan]
    for _ in range(TURNS):
        for done, (run, seconds) in zip(runs, plan, strict=True):
            done.append(run(stack, opts, seconds))
    return [_merged(done) for done in runs]


def _pubsub(phase: Phase) -> Measure:
    return lambda stack, opts, seconds: pubsub_phase(phase, stack, opts, seconds)


def _merged(figures: list[Figure]) -> Figure:
    rates = [figure.rate for figure in figures if figure.rate is not None]
    published = [figure.published for figure in figures if figure.published is not None]
    complete = [figure.complete for figure in figures if figure.complete is not None]
    return Figure(
        figures[0].name,
        merge(rates) if rates else None,
        sum(published) if published else None,
        all(complete) if complete else None,
    )


XADD_NAME = "raw pipelined XADD (no pub/sub)"
WRITE_NAME = f"Relay.write alone (in-process, {BATCH_FRAMES}-frame batches)"
RELAY_READ = Phase(
    "the relay's read loop alone (Relay.run, writes only counted)",
    "read",
    relay_reader,
    True,
)
GENQ_RELAY = Phase("genq relay (workers/relay.py)", "relay", genq_relay, False)


def hop_latency(stack: Stack, frames: int, pause_s: float = HOP_PAUSE_S) -> list[float]:
    """Seconds from PUBLISH of one token frame until XREAD returns it from its stream, one
    frame at a time with the genq relay otherwise idle: the hop readers pay for streams."""
    client = redis.Redis.from_url(stack.settings.redis_url)
    tpl = templates(Keys(stack.settings.key_prefix), "hop", 1)[0]
    record_jobs(client, Keys(stack.settings.key_prefix), "hop", 1)
    took = []
    with genq_relay(stack, "hop"):
        for seq in range(1, frames + 1):
            frame = tpl.frame(seq, b"%d" % (time.time_ns() // 1_000_000))
            started = time.perf_counter()
            client.publish(tpl.channel, frame)
            if client.xread({tpl.stream: f"0-{seq - 1}"}, count=1, block=HOP_TIMEOUT_MS):
                took.append(time.perf_counter() - started)
            time.sleep(pause_s)
    client.close()
    return took
