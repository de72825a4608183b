"""The relay and memory sections. The relay's progress is its own figure,
`genq_relay_frames_total` on its metrics endpoint; its jobs are submitted with genq's client
(no worker runs them: the relay moves frames only of jobs that have a record). The baselines
run on the same redis-server; load and baselines: ops/bench/child.py. Every phase runs in two
turns, alternating. Memory is sampled from before a long job starts until the reader has read
its last frame, after a short job (model loading is not growth).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

from genq import Client, JobSpec
from ops.bench.child import COUNTER, READY, frame
from ops.bench.report import BENCH_MODEL, mb, met, percentile, say, table
from ops.bench.stack import Stack, cpu_s, local_stack, pid, serving
from ops.localstack import Relay, StackError, free_port, wait_for

TARGET_FPS = 100_000
TARGET_OF_XADD = 0.6  # of raw pipelined XADD in the same run, at least
TURNS = 2
SAMPLE_S = 0.25
WARM_S = 1.0  # left out at the start of a turn
DRAIN_TIMEOUT_S = 20.0
HOP_FRAMES = 200
CHANNEL = "%s:{%s}:tokens"  # a job's frames channel, as README's "Frames" names it
RELAY, READ, XADD = "genq relay", "raw pub/sub subscriber (counts only)", "raw pipelined XADD"
FLAT_BYTES = 10_000_000  # target: relay and reader within 10 MB of where they started
FLAT = ("relay", "reader")
WARM_TOKENS = 512
JOB_TIMEOUT_S = 1800.0
Sample = tuple[float, int, dict[str, float]]  # when, frames moved so far, CPU s by process


@dataclass
class Figure:
    """A phase's turns: frames moved, steady seconds, CPU seconds by process, all arrived."""

    name: str
    frames: float = 0.0
    seconds: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    complete: bool = True

    @property
    def per_s(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def add(self, samples: list[Sample], complete: bool) -> None:
        """The turn's steady part: from WARM_S after the first progress to the end."""
        started = next((at for at, count, _ in samples if count > samples[0][1]), None)
        steady = [s for s in samples if started is not None and s[0] >= started + WARM_S]
        self.complete = self.complete and complete
        if len(steady) >= 2:
            (t0, n0, c0), (t1, n1, c1) = steady[0], steady[-1]
            self.frames, self.seconds = self.frames + n1 - n0, self.seconds + t1 - t0
            self.cpu_s = {k: self.cpu_s.get(k, 0.0) + c1[k] - c0[k] for k in c0}


def section(args: argparse.Namespace, cache: Path) -> None:
    """Frames/s `genq relay` moves from pub/sub into the jobs' streams, beside a raw pattern
    subscriber that only counts and raw pipelined XADD of the same frames (targets: >= 100,000
    frames/s and >= 0.6 x XADD); then the PUBLISH -> XREAD hop of one frame at a time."""
    port = free_port()
    say(
        f"load: {args.relay_jobs} jobs round-robin, {len(frame('0' * 32, 1, 1))}-byte token "
        "frames, pipelines of 500 from one process, held back while subscribers are over 4 MB "
        f"behind; {TURNS} turns a phase, alternating; the first {WARM_S:g} s of each left out"
    )
    env = {"GENQ_RELAY_METRICS_PORT": str(port)}
    with local_stack(cache, env, workers=0, relay=False) as stack:
        figures = {name: Figure(name) for name in (READ, XADD, RELAY)}
        for _ in range(TURNS):
            _turn(stack, args, figures[READ], "subscribe", "bench:{%s}:tokens", port)
            _turn(stack, args, figures[XADD], "xadd", "bench:{%s}:stream", port)
            channel = CHANNEL % (stack.settings.key_prefix, "%s")
            _turn(stack, args, figures[RELAY], "publish", channel, port)
        _report(*figures.values())
        _hop(stack)


def _jobs(stack: Stack, count: int) -> list[str]:
    spec = JobSpec(prompt="relay", model=BENCH_MODEL, max_tokens=16)
    with Client(stack.settings) as client:
        return [client.submit(spec).job_id for _ in range(count)]


def _turn(
    stack: Stack, args: argparse.Namespace, figure: Figure, mode: str, keys: str, port: int
) -> None:
    """One turn of a phase: its consumer (a raw subscriber, `genq relay`, none for XADD), then
    the load for its share of the seconds."""
    seconds = (args.relay_seconds if mode == "publish" else args.relay_baseline_seconds) / TURNS
    url = stack.settings.redis_url
    control = redis.Redis.from_url(url)
    control.flushdb()  # the last turn's streams and counter
    jobs = [f"{n:032x}" for n in range(args.relay_jobs)]
    jobs = _jobs(stack, len(jobs)) if mode == "publish" else jobs
    progress = _progress(control, mode, port)
    consumers = {
        "subscribe": stack.child(["subscribe", url, keys], "subscriber", "subscribed"),
        "publish": Relay(stack.env, stack.cache / "relay.log"),
    }
    with ExitStack() as started:
        pids = {"redis-server": pid(stack.redis)}
        if mode in consumers:
            role = "relay" if mode == "publish" else "subscriber"
            pids[role] = pid(started.enter_context(serving(consumers[mode])))
        before = progress()
        load_args = ["xadd" if mode == "xadd" else "publish", url, keys, str(seconds), *jobs]
        with serving(stack.child(load_args, f"load-{mode}")) as load:
            samples = _sample(load.running, progress, {"load": pid(load), **pids})
            sent = int(load.printed(30.0)["published"])
        try:
            wait_for(lambda: progress() - before >= sent, DRAIN_TIMEOUT_S, "the last frames")
            figure.add(samples, complete=True)
        except StackError:
            figure.add(samples, complete=False)
    control.close()


def _progress(control: redis.Redis, mode: str, port: int) -> Callable[[], int]:
    """The consumer's count so far: the relay's metric, the subscriber's counter, or XLEN."""
    if mode == "publish":
        return lambda: relay_frames(f"http://127.0.0.1:{port}/metrics")
    if mode == "subscribe":
        return lambda: int(control.get(COUNTER) or 0)
    return lambda: int(sum(control.xlen(key) for key in control.scan_iter("bench:*:stream")))


def relay_frames(url: str) -> int:
    """A relay's `genq_relay_frames_total`, from its metrics endpoint."""
    with urllib.request.urlopen(url, timeout=10) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith("genq_relay_frames_total "):
                return int(float(line.split()[1]))
    return 0


def _sample(
    alive: Callable[[], bool], progress: Callable[[], int], pids: dict[str, int]
) -> list[Sample]:
    procs = {role: psutil.Process(pid) for role, pid in pids.items()}
    samples: list[Sample] = []
    while alive():
        cpu = {}
        for role, proc in procs.items():
            try:
                cpu[role] = cpu_s(proc)
            except psutil.NoSuchProcess:
                cpu[role] = samples[-1][2][role] if samples else 0.0
        samples.append((time.monotonic(), progress(), cpu))
        time.sleep(SAMPLE_S)
    return samples


def _report(read: Figure, xadd: Figure, relay: Figure) -> None:
    rows = [
        [f.name, f"{f.per_s:,.0f}", f"{f.seconds:.1f}", "yes" if f.complete else "NO",
         ", ".join(f"{k} {v / f.seconds:.0%}" for k, v in f.cpu_s.items())]
        for f in (read, xadd, relay)
    ]  # fmt: skip
    header = ("path", "frames/s", "seconds", "all arrived", "CPU (share of a core)")
    rate, cpu = relay.per_s, relay.cpu_s.get("relay", 0.0)
    say(
        "",
        table(header, rows),
        "",
        f"genq relay: {rate:,.0f} frames/s sustained (target >= {TARGET_FPS:,}: "
        f"{met(rate >= TARGET_FPS)}); {relay.frames / max(cpu, 1e-9):,.0f} frames per "
        "CPU-second of the relay",
        f"  {_times(rate, xadd.per_s)} raw pipelined XADD in this run (target >= "
        f"{TARGET_OF_XADD}: {met(rate >= TARGET_OF_XADD * xadd.per_s > 0)})",
        f"  {_times(rate, read.per_s)} a raw subscriber that only counts",
    )


def _times(value: float, base: float) -> str:
    return f"{value / base:.2f} x" if base else "(no figure: it moved nothing) x"


def _hop(stack: Stack) -> None:
    """Seconds from PUBLISH of one frame until XREAD returns it from its stream, one frame at
    a time with the relay otherwise idle: the hop a reader pays for streams."""
    job = _jobs(stack, 1)[0]
    control = redis.Redis.from_url(stack.settings.redis_url)
    channel, took = CHANNEL % (stack.settings.key_prefix, job), []
    stream = channel.removesuffix(":tokens") + ":stream"  # README's "Frames": the job's stream
    with serving(Relay(stack.env, stack.cache / "relay.log")):
        for seq in range(1, HOP_FRAMES + 1):
            started = time.perf_counter()
            control.publish(channel, frame(job, seq, time.time_ns() // 1_000_000))
            if control.xread({stream: f"0-{seq - 1}"}, count=1, block=2000):
                took.append((time.perf_counter() - started) * 1000)
            time.sleep(0.01)
    if not took:
        say(f"one frame at a time: none of {HOP_FRAMES} reached its stream")
        return
    say(
        f"one frame at a time, PUBLISH -> readable with XREAD: median {statistics.median(took):.2f}"
        f" ms, p90 {percentile(sorted(took), 90):.2f} ms, max {max(took):.2f} ms over "
        f"{len(took)} of {HOP_FRAMES} frames"
    )


def memory(args: argparse.Namespace, cache: Path) -> None:
    """RSS of the relay, a reader process and the worker over a 100,000-token job on the tiny
    model (target: relay and reader flat within 10 MB)."""
    job = {"prompt": "Once upon a time", "model": "tiny", "max_tokens": args.memory_tokens,
           "window_tokens": args.memory_window, "seed": 5, "ignore_eos": True}  # fmt: skip
    say(
        f"job: {args.memory_tokens:,} tokens in windows of {args.memory_window} on 'tiny', EOS "
        f"banned; resident memory every {args.memory_interval_s:g} s from before submit until "
        "the reader has read the done frame (after a short warm-up job)"
    )
    with local_stack(cache, {}, workers=1) as stack, Client(stack.settings) as client:
        client.submit(**{**job, "max_tokens": WARM_TOKENS}).result(timeout=JOB_TIMEOUT_S)
        with serving(stack.child(["reader"], "reader", READY, stdin=True)) as reader:
            worker = psutil.Process(pid(stack.workers[0]))
            procs = {
                "relay": psutil.Process(pid(stack.relay)),
                "reader": psutil.Process(pid(reader)),
                "worker pool process": (worker.children() or [worker])[0],
            }
            samples: dict[str, list[int]] = {role: [] for role in procs}
            _rss(procs, samples)
            started = time.monotonic()
            reader.send(client.submit(**job).job_id)
            while reader.running() and time.monotonic() - started < JOB_TIMEOUT_S:
                _rss(procs, samples)
                time.sleep(args.memory_interval_s)
            seconds = time.monotonic() - started
            _rss(procs, samples)
            stack.check_alive()
            read = reader.printed(JOB_TIMEOUT_S)
        used = int(redis.Redis.from_url(stack.settings.redis_url).info("memory")["used_memory"])
    count = min(len(series) for series in samples.values())
    say(f"  the job took {seconds:.1f} s; {count} samples")
    width = max(map(len, samples))
    say(*(f"  {role:<{width}}  {_series(role, series)}" for role, series in samples.items()))
    say(
        f"  the reader read {read['frames']:,} frames, {read['tokens']:,} tokens (the job: "
        f"{read['completion_tokens']:,}); its stream keeps the text by design: "
        f"{read['text_chars']:,} characters, {mb(read['text_bytes'])} as UTF-8",
        f"  redis-server used_memory at the end: {mb(used)} (the job's stream, checkpoint and "
        "record)",
    )


def _rss(procs: dict[str, psutil.Process], samples: dict[str, list[int]]) -> None:
    """Each process's RSS now; a process that has exited keeps its last sample."""
    for role, proc in procs.items():
        with contextlib.suppress(psutil.NoSuchProcess):
            samples[role].append(int(proc.memory_info().rss))


def _series(role: str, rss: list[int]) -> str:
    start, peak, end = rss[0], max(rss), rss[-1]
    flat = peak - start <= FLAT_BYTES and abs(end - start) <= FLAT_BYTES
    return (
        f"start {mb(start)}, peak {mb(peak)}, end {mb(end)}: growth {mb(end - start, sign=True)}, "
        f"peak - start {mb(peak - start, sign=True)} (flat within {mb(FLAT_BYTES)}: "
        f"{met(flat) if role in FLAT else 'informational'})"
    )
