"""Hand-off: SIGTERM the worker running a long windowed job (a deploy stopping it) while a
second worker idles, and measure how long the job's stream goes without tokens, how much was
computed twice, and whether the reader's text is the job's result and the text the same job
had uninterrupted beside other batch neighbours.

One stack (redis-server, relay, workers a and b, each with --slots of its own); per run, one
job signalled a little past its third checkpointed window, the stopped worker restarted and
warmed (its model loaded by a short job) before the next run, so that every hand-off lands on
a warm worker, as in a rolling deploy. Leases far longer than the section: only the hand-off
can move the job in time. The clock is this process's wall clock at the signal against the
frames' `ts_ms` (same machine). The reference text comes first, from worker a alone with the
job and `slots - 1` neighbours (the same job with other seeds) decoding together; the signalled
runs decode the job without neighbours, before and after the hand-off.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genq import Client, JobFailed, StreamTimeout
from genq.common.frames import Frame, ResumeFrame, TokenFrame
from ops.bench.recovery import holder
from ops.bench.report import TINY, job_model, met, say
from ops.bench.stack import Stack, local_stack
from ops.localstack import Worker

TARGET_S = 0.5  # signal -> first token of the new epoch, median of the runs
STREAM_TIMEOUT_S = 180.0
REFERENCE_TIMEOUT_S = 600.0  # the job and its neighbours, together
EXIT_TIMEOUT_S = 60.0  # the signalled worker's exit, after its jobs handed off
LEASE_TTL_S = 600.0  # far past the section: a reaped lease would be recovery, not hand-off
WINDOWS_BEFORE = 3  # checkpointed windows before the signal
INTO_WINDOW = 0.5  # share of the next window the reader has seen when the signal goes
WARM_TOKENS = 8
WARM_TRIES = 30  # short jobs until one ran on the worker to warm (either worker takes one)
NAMES = ("a", "b")
# Job size and window (tokens) unless the command line says: long enough to run well past the
# signal on the tiny model (thousands of tokens a second) and on a real one (tens).
TINY_JOB = (20_000, 100)
REAL_JOB = (400, 40)


@dataclass(frozen=True)
class HandoffJob:
    max_tokens: int
    window_tokens: int
    model: str
    seed: int = 77

    def fields(self) -> dict[str, Any]:
        return {
            "prompt": "hand-off",
            "model": self.model,
            "max_tokens": self.max_tokens,
            "window_tokens": self.window_tokens,
            "seed": self.seed,
            "ignore_eos": True,
        }

    @property
    def signal_after(self) -> int:
        """Tokens of epoch 0 the reader sees before the signal (if the windows are in)."""
        return int((WINDOWS_BEFORE + INTO_WINDOW) * self.window_tokens)


@dataclass
class Watch:
    """What the reader saw of one signalled job; `send` signals the holder when its windows
    are checkpointed and returns the wall clock (ms) it did so at, else None."""

    signal_after: int
    send: Callable[[], float | None]
    signalled_ms: float | None = None
    resume_ms: int | None = None  # the new epoch's resume frame's ts_ms
    token_ms: int | None = None  # the new epoch's first token frame's ts_ms
    token_seen_ms: float | None = None  # when this reader got it
    epoch0_tokens: int = 0
    windows: int = 0  # epoch 0's window frames seen: the relay checkpoints before it writes
    frames: list[Frame] = field(default_factory=list)

    def see(self, frame: Frame) -> None:
        self.frames.append(frame)
        if frame.type == "window" and frame.epoch == 0:
            self.windows += 1
        if isinstance(frame, TokenFrame) and frame.epoch == 0:
            self.epoch0_tokens += len(frame.data.token_ids) or frame.data.count
            if self.signalled_ms is None and self.epoch0_tokens >= self.signal_after:
                self.signalled_ms = self.send()
        elif isinstance(frame, ResumeFrame) and self.resume_ms is None and frame.epoch >= 1:
            self.resume_ms = frame.ts_ms
        elif isinstance(frame, TokenFrame) and self.token_ms is None and frame.epoch >= 1:
            self.token_ms = frame.ts_ms
            self.token_seen_ms = time.time_ns() / 1e6


@dataclass(frozen=True)
class RunResult:
    to_resume_s: float
    to_token_s: float  # signal to the first token frame of the new epoch, by its ts_ms
    seen_s: float  # signal to the reader receiving that frame
    recomputed: int  # epoch-0 tokens in the stream beyond the resume's committed_tokens
    same_text: bool  # the streamed text is the result's, and the reference's
    exit_code: int | None  # the signalled worker's; None: still running after EXIT_TIMEOUT_S
    exit_s: float  # signal to its exit
    moved: bool  # the job ended on the other worker


@dataclass
class Result:
    neighbours: int  # beside the job in its reference run
    runs: list[RunResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def median(self, name: str) -> float:
        return float(statistics.median(getattr(run, name) for run in self.runs))

    def worst(self, name: str) -> float:
        return float(max(getattr(run, name) for run in self.runs))


class HandoffFailed(RuntimeError):
    """A signalled job did not hand off as expected; the message says what was seen."""


def measure(cache: Path, job: HandoffJob, slots: int, runs: int) -> Result:
    env = {"GENQ_SLOTS": str(slots), "GENQ_LEASE_TTL_S": str(LEASE_TTL_S)}
    with local_stack(cache, env, workers=0) as stack, Client(stack.settings) as client:
        stack.start_worker(NAMES[0])
        _warm(client, job, {NAMES[0]})
        expected = _reference(client, job, slots - 1)
        stack.start_worker(NAMES[1])
        _warm(client, job, {NAMES[1]})
        result = Result(slots - 1)
        for _ in range(runs):
            try:
                result.runs.append(_one_run(stack, client, job, expected))
            except (HandoffFailed, JobFailed, StreamTimeout) as exc:
                result.failures.append(str(exc))
            stack.check_alive()
        return result


def _reference(client: Client, job: HandoffJob, neighbours: int) -> str:
    """The job's text, uninterrupted, beside `neighbours` jobs on the one worker running."""
    others = [
        client.submit(**{**job.fields(), "seed": job.seed + 1 + n}) for n in range(neighbours)
    ]
    text = client.submit(**job.fields()).result(timeout=REFERENCE_TIMEOUT_S).text
    for other in others:
        other.result(timeout=REFERENCE_TIMEOUT_S)
    return text


def _warm(client: Client, job: HandoffJob, names: set[str]) -> None:
    """Short jobs until each of `names` ran one (its model loaded, its engine up)."""
    warm = {**job.fields(), "max_tokens": WARM_TOKENS, "window_tokens": WARM_TOKENS}
    left = set(names)
    for _ in range(WARM_TRIES):
        handle = client.submit(**warm)
        handle.result(timeout=STREAM_TIMEOUT_S)
        left.discard(holder(client, handle.job_id))
        if not left:
            return
    raise HandoffFailed(f"no warm-up job ran on worker {', '.join(sorted(left))}")


@dataclass
class ExitWatch:
    """The signalled worker's exit, waited for by a thread from the signal on (the stream
    goes on meanwhile); `code` None: still running after EXIT_TIMEOUT_S."""

    worker: Worker
    code: int | None = None
    at_ms: float | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()

    def _wait(self) -> None:
        assert self.worker.proc is not None
        try:
            self.code = self.worker.proc.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return
        self.at_ms = time.time_ns() / 1e6

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()


def _one_run(stack: Stack, client: Client, job: HandoffJob, expected: str) -> RunResult:
    handle = client.submit(**job.fields())
    signalled: list[ExitWatch] = []

    def send() -> float | None:
        if watch.windows < WINDOWS_BEFORE:
            return None  # checked again at the next token frame
        worker = stack.worker(holder(client, handle.job_id))
        other = next(w for w in stack.workers if w is not worker)
        if worker.proc is None or other.proc is None or other.proc.poll() is not None:
            raise HandoffFailed("a worker is not running before the signal")
        signalled.append(ExitWatch(worker))
        at = time.time_ns() / 1e6
        worker.proc.send_signal(signal.SIGTERM)  # the main process only, as a deploy does
        signalled[0].start()
        return at

    watch = Watch(job.signal_after, send)
    try:
        with handle.stream(timeout=STREAM_TIMEOUT_S) as stream:
            for frame in stream:
                watch.see(frame)
            same = stream.text == stream.result.text == expected
    finally:  # the next run has two warm workers again, whatever became of this one
        if signalled:
            signalled[0].join()
            signalled[0].worker.stop()
            stack.start_worker(signalled[0].worker.name)
            _warm(client, job, {signalled[0].worker.name})
    if not signalled:
        raise HandoffFailed(f"job {handle.job_id}: ended before its windows were checkpointed")
    moved = holder(client, handle.job_id) != signalled[0].worker.name
    return _result(handle.job_id, watch, same, signalled[0], moved)


def _result(
    job_id: str,
    watch: Watch,
    same: bool,
    exited: ExitWatch,
    moved: bool,
) -> RunResult:
    if watch.signalled_ms is None or watch.resume_ms is None or watch.token_ms is None:
        raise HandoffFailed(
            f"job {job_id}: signalled {watch.signalled_ms is not None}, resumed "
            f"{watch.resume_ms is not None}, new-epoch token {watch.token_ms is not None}"
        )
    frames = watch.frames
    resume = next(f for f in frames if isinstance(f, ResumeFrame))
    lost = sum(len(f.data.token_ids) for f in frames if isinstance(f, TokenFrame) and f.epoch == 0)
    at = watch.signalled_ms
    return RunResult(
        to_resume_s=(watch.resume_ms - at) / 1000,
        to_token_s=(watch.token_ms - at) / 1000,
        seen_s=((watch.token_seen_ms or watch.token_ms) - at) / 1000,
        recomputed=lost - resume.data.committed_tokens,
        same_text=same,
        exit_code=exited.code,
        exit_s=((exited.at_ms or at) - at) / 1000,
        moved=moved,
    )


def section(args: argparse.Namespace, cache: Path) -> None:
    tokens, window = TINY_JOB if args.model == TINY else REAL_JOB
    job = HandoffJob(
        args.handoff_tokens or tokens, args.handoff_window or window, job_model(args.model)
    )
    slots = args.handoff_slots
    say(
        f"job: {job.max_tokens:,} tokens in windows of {job.window_tokens} on {job.model!r}, "
        f"seed {job.seed}, EOS banned; workers a and b, --slots {slots} each (GENQ_SLOTS; "
        f"genq worker's default is 1), lease TTL {LEASE_TTL_S:g} s; the main process of the "
        f"worker running the job gets SIGTERM once {WINDOWS_BEFORE} windows are checkpointed "
        f"and the reader has seen {job.signal_after:,} tokens; then it is restarted and warmed"
    )
    say(*describe(measure(cache, job, slots, args.handoff_runs), job))


def describe(result: Result, job: HandoffJob) -> list[str]:
    lines = [f"{len(result.runs)} runs:"]
    lines += [f"  run FAILED: {failure}" for failure in result.failures]
    lines += [_run_line(n + 1, run) for n, run in enumerate(result.runs)]
    if not result.runs:
        return lines
    runs = result.runs
    to_token = result.median("to_token_s")
    recomputed = [run.recomputed for run in runs]
    same = sum(run.same_text for run in runs)
    clean = sum(run.exit_code == 0 for run in runs)
    moved = sum(run.moved for run in runs)
    lines += [
        f"  SIGTERM -> first token of the new epoch (its ts_ms): median {to_token:.2f} s, worst "
        f"{result.worst('to_token_s'):.2f} s (target: median <= {TARGET_S:g} s: "
        f"{met(to_token <= TARGET_S)}); SIGTERM -> resume frame median "
        f"{result.median('to_resume_s'):.2f} s; as the reader got the token: median "
        f"{result.median('seen_s'):.2f} s",
        f"  tokens recomputed (epoch-0 tokens in the stream - committed_tokens): "
        f"{', '.join(map(str, recomputed))} (at most one window, {job.window_tokens}: "
        f"{met(max(recomputed) <= job.window_tokens)}); finished on the other worker: "
        f"{_all(moved, runs)}",
        f"  streamed text = result = the uninterrupted run's beside {result.neighbours} other "
        f"jobs: {_all(same, runs)}",
        f"  signalled worker exited 0: {_all(clean, runs)}; {_exits(runs)}",
    ]
    return lines


def _exits(runs: list[RunResult]) -> str:
    times = [run.exit_s for run in runs if run.exit_code is not None]
    if not times:
        return f"none exited within {EXIT_TIMEOUT_S:g} s"
    return f"SIGTERM -> exit median {statistics.median(times):.2f} s, worst {max(times):.2f} s"


def _run_line(n: int, run: RunResult) -> str:
    code = "still running" if run.exit_code is None else str(run.exit_code)
    return (
        f"  run {n}: -> resume {run.to_resume_s:.3f} s, -> token {run.to_token_s:.3f} s (reader "
        f"{run.seen_s:.3f} s), recomputed {run.recomputed}, same text {run.same_text}, old "
        f"worker exit {code} after {run.exit_s:.2f} s"
    )


def _all(count: int, runs: list[RunResult]) -> str:
    return f"{'yes' if count == len(runs) else 'NO'} ({count}/{len(runs)})"
