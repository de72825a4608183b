"""Failover: stop the worker running a long windowed job while a second one idles; how long
its stream goes without tokens (this process's wall clock at the signal against the frames'
`ts_ms`), how much is computed twice, and whether its text is the uninterrupted run's.

recovery: SIGKILL the worker's process group mid-window (a later window each run, 0 to 90 ms
past the triggering frame so that kills do not all land just after a flush), per lease TTL,
two workers; the killed one is restarted. Recomputed = what the killed attempt generated (its
token frames, plus what its own rate made between its last frame and the kill) - the resume
frame's `committed_tokens`.

handoff: SIGTERM the worker's main process (a deploy) once three windows are checkpointed,
workers a and b with --slots each, leases far past the section; the stopped worker restarted
and warmed before the next run. The reference text is the job's on worker a beside
`slots - 1` neighbours (other seeds); the signalled runs decode it alone.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genq import Client, JobFailed, JobSpec, StreamTimeout
from genq.common.frames import Frame, ResumeFrame, TokenFrame
from ops.bench.report import TINY, job_model, met, say
from ops.bench.stack import Stack, local_stack
from ops.localstack import Worker

STREAM_TIMEOUT_S = 180.0
REFERENCE_TIMEOUT_S = 600.0  # the handoff job and its neighbours, together
EXIT_TIMEOUT_S = 60.0  # the SIGTERMed worker's exit, after its jobs handed off
SLACK_S = 2.0  # recovery's target: next token within lease TTL + this
HANDOFF_TARGET_S = 0.5  # SIGTERM -> first token of the new epoch, median
HANDOFF_LEASE_TTL_S = 600.0  # far past the section: a reaped lease would be recovery
FIRST_KILL_WINDOW, KILL_WINDOW_STEP = 5, 9
WINDOWS_BEFORE_TERM = 3  # checkpointed windows before the SIGTERM
INTO_WINDOW = 0.5  # share of the next window the reader has seen when the signal goes
KILL_DELAYS_S = tuple(n / 100 for n in range(10))  # after the triggering frame, by run
WARM_TOKENS, WARM_TRIES = 8, 30  # short jobs until one ran on the worker to warm
# Job size and window (tokens) unless the command line says: the tiny model makes thousands
# of tokens a second, a real model tens.
SIZES = {"recovery": ((4000, 100), (240, 40)), "handoff": ((20_000, 100), (400, 40))}


@dataclass
class Watch:
    """What the reader saw of one stopped job. `signal` is called at each epoch-0 token frame
    until it returns the wall clock (ms) it signalled at."""

    signal: Callable[[Watch], float | None]
    frames: list[Frame] = field(default_factory=list)
    signalled_ms: float | None = None
    resume_ms: int | None = None  # the new epoch's resume frame's ts_ms
    token_ms: int | None = None  # the new epoch's first token frame's ts_ms
    token_seen_ms: float | None = None  # when this reader got it
    tokens: int = 0  # epoch 0's, streamed
    windows: int = 0  # epoch 0's window frames: the relay checkpoints before it writes one

    def see(self, frame: Frame) -> None:
        self.frames.append(frame)
        self.windows += frame.type == "window" and frame.epoch == 0
        if isinstance(frame, TokenFrame) and frame.epoch == 0:
            self.tokens += len(frame.data.token_ids) or frame.data.count
            if self.signalled_ms is None:
                self.signalled_ms = self.signal(self)
        elif isinstance(frame, ResumeFrame) and self.resume_ms is None:
            self.resume_ms = frame.ts_ms
        elif isinstance(frame, TokenFrame) and self.token_ms is None:
            self.token_ms, self.token_seen_ms = frame.ts_ms, time.time_ns() / 1e6

    def committed(self) -> int:
        return next(f.data.committed_tokens for f in self.frames if isinstance(f, ResumeFrame))


@dataclass(frozen=True)
class RunResult:
    to_resume_s: float
    to_token_s: float  # signal to the first token frame of the new epoch, by its ts_ms
    seen_s: float  # signal to the reader receiving that frame
    recomputed: int
    same_text: bool  # the streamed text is the result's, and the reference's
    exit_code: int | None = None  # the SIGTERMed worker's; None: still running
    exit_s: float = 0.0  # signal to its exit
    moved: bool = True  # the job ended on the other worker

    @property
    def clean(self) -> bool:
        return self.exit_code == 0


@dataclass
class Results:
    runs: list[RunResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def median(self, name: str) -> float:
        return float(statistics.median(getattr(run, name) for run in self.runs))

    def worst(self, name: str) -> float:
        return float(max(getattr(run, name) for run in self.runs))

    def count(self, name: str) -> str:
        n = sum(bool(getattr(run, name)) for run in self.runs)
        return f"{'yes' if n == len(self.runs) else 'NO'} ({n}/{len(self.runs)})"


class FailoverFailed(RuntimeError):
    """A stopped job did not resume as expected; the message says what was seen."""


def _job(args: argparse.Namespace, name: str, model: str) -> JobSpec:
    tokens, window = SIZES[name][args.model != TINY]
    return JobSpec(
        prompt=name,
        model=model,
        max_tokens=getattr(args, f"{name}_tokens") or tokens,
        window_tokens=getattr(args, f"{name}_window") or window,
        seed=77,
        ignore_eos=True,
    )


def _describe(job: JobSpec) -> str:
    return (
        f"job: {job.max_tokens:,} tokens in windows of {_window(job)} on {job.model!r}, "
        f"seed {job.seed}, EOS banned"
    )


def _window(job: JobSpec) -> int:
    return job.window_tokens or job.max_tokens


def _with(job: JobSpec, **changes: Any) -> JobSpec:
    return job.model_copy(update=changes)


def _runs(runs: int, one: Callable[[int], RunResult], stack: Stack) -> Results:
    results = Results()
    for run in range(runs):
        try:
            results.runs.append(one(run))
        except (FailoverFailed, JobFailed, StreamTimeout) as exc:
            results.failures.append(str(exc))
        stack.check_alive()
    return results


def _stream(client: Client, job_id: str, watch: Watch, expected: str) -> bool:
    """The job's stream read to its end; whether its text is the result's and `expected`."""
    with client.job(job_id).stream(timeout=STREAM_TIMEOUT_S) as stream:
        for frame in stream:
            watch.see(frame)
        return stream.text == stream.result.text == expected


def _timed(job_id: str, watch: Watch, recomputed: float, same: bool, **more: Any) -> RunResult:
    if watch.signalled_ms is None or watch.resume_ms is None or watch.token_ms is None:
        raise FailoverFailed(
            f"job {job_id}: signalled {watch.signalled_ms is not None}, resumed "
            f"{watch.resume_ms is not None}, new-epoch token {watch.token_ms is not None}"
        )
    at = watch.signalled_ms
    return RunResult(
        (watch.resume_ms - at) / 1000,
        (watch.token_ms - at) / 1000,
        ((watch.token_seen_ms or watch.token_ms) - at) / 1000,
        round(recomputed),
        same,
        **more,
    )


def holder(client: Client, job_id: str) -> str:
    """The name of the worker running the job now (its node is `name@host`)."""
    return client.record(job_id).worker.partition("@")[0]


def recovery(args: argparse.Namespace, cache: Path) -> None:
    """SIGKILL the worker of a long windowed job, a second worker idle, per lease TTL: kill ->
    next token (target <= TTL + 2 s), tokens recomputed per resume (target: median <= 2
    chunks), final text = uninterrupted."""
    job = _job(args, "recovery", args.model)
    kills = ", ".join(f"{_kill_after(job, run):,}" for run in range(args.recovery_runs))
    say(
        f"{_describe(job)}; two workers; the one running the job is SIGKILLed (its process "
        f"group) when the reader has seen {kills} tokens, then restarted"
    )
    for ttl in args.lease_ttls:
        _recovery_ttl(cache, job, ttl, args.recovery_runs)


def _recovery_ttl(cache: Path, job: JobSpec, ttl: float, runs: int) -> None:
    env = {"GENQ_LEASE_TTL_S": str(ttl)}
    with local_stack(cache, env, workers=2) as stack, Client(stack.settings) as client:
        other = client.submit(_with(job, max_tokens=_window(job)))  # warms the other
        expected = client.submit(job).result(timeout=STREAM_TIMEOUT_S).text
        other.result(timeout=STREAM_TIMEOUT_S)
        results = _runs(runs, lambda n: _killed_run(stack, client, job, expected, n), stack)
        say(*_recovery_lines(results, job, ttl, stack))


def _kill_after(job: JobSpec, run: int) -> int:
    """Tokens of epoch 0 the reader sees before the kill: mid-window, later each run."""
    windows = job.max_tokens // _window(job)
    window = (FIRST_KILL_WINDOW + KILL_WINDOW_STEP * run) % max(windows - 2, 1)
    return int((max(window, 1) + INTO_WINDOW) * _window(job))


def _killed_run(stack: Stack, client: Client, job: JobSpec, expected: str, run: int) -> RunResult:
    handle = client.submit(job)
    killed: list[str] = []

    def kill(watch: Watch) -> float | None:
        if watch.tokens < _kill_after(job, run):
            return None
        time.sleep(KILL_DELAYS_S[run % len(KILL_DELAYS_S)])
        killed.append(holder(client, handle.job_id))
        stack.worker(killed[0]).signal(signal.SIGKILL)
        return time.time_ns() / 1e6

    watch = Watch(kill)
    try:
        same = _stream(client, handle.job_id, watch, expected)
    finally:  # the next run has two workers again, whatever became of this one
        if killed:
            stack.worker(killed[0]).stop()  # reaps it
            stack.start_worker(killed[0])
    made = _generated(watch.frames, watch.signalled_ms or 0.0)
    return _timed(handle.job_id, watch, made - watch.committed(), same)


def _generated(frames: Sequence[Frame], stopped_ms: float) -> float:
    """Tokens epoch 0 generated until `stopped_ms`: those it streamed, and those its own rate
    made between its last token frame and then."""
    chunks = [f for f in frames if isinstance(f, TokenFrame) and f.epoch == 0]
    streamed = sum(len(f.data.token_ids) for f in chunks)
    span_ms = chunks[-1].ts_ms - chunks[0].ts_ms
    rate = (streamed - len(chunks[0].data.token_ids)) / span_ms if span_ms > 0 else 0.0
    return streamed + rate * max(stopped_ms - chunks[-1].ts_ms, 0.0)


def _recovery_lines(results: Results, job: JobSpec, ttl: float, stack: Stack) -> list[str]:
    reap, chunk = stack.settings.reap_interval_s, stack.settings.chunk_tokens
    lines = [f"lease TTL {ttl:g} s (reap interval {reap:g} s), {len(results.runs)} runs:"]
    lines += [f"  run FAILED: {failure}" for failure in results.failures]
    if not results.runs:
        return lines
    worst, target = results.worst("to_token_s"), ttl + SLACK_S
    recomputed = [run.recomputed for run in results.runs]
    median = statistics.median(recomputed)
    return [
        *lines,
        f"  kill -> first token of the new epoch (its ts_ms): median "
        f"{results.median('to_token_s'):.2f} s, worst {worst:.2f} s (target <= TTL + "
        f"{SLACK_S:g} s = {target:g} s: {met(worst <= target)}); kill -> resume frame median "
        f"{results.median('to_resume_s'):.2f} s; as the reader got the token: median "
        f"{results.median('seen_s'):.2f} s",
        f"  tokens recomputed per resume (generated by the killed attempt - committed_tokens): "
        f"median {median:g} in windows of {_window(job)} (target <= the uncommitted "
        f"tail, 2 chunks of {chunk}: {met(median <= 2 * chunk)}); each: "
        f"{', '.join(map(str, recomputed))}",
        f"  final text equals the uninterrupted run: {results.count('same_text')}",
    ]


def handoff(args: argparse.Namespace, cache: Path) -> None:
    """SIGTERM the worker running a long windowed job past its third window, a second warm
    worker idle, both --slots 8: SIGTERM -> first token of the new epoch (target: median <=
    0.5 s), tokens recomputed, the old worker's exit, streamed text = result = the job
    uninterrupted beside 7 others."""
    job, slots = _job(args, "handoff", job_model(args.model)), args.handoff_slots
    say(
        f"{_describe(job)}; workers a and b, --slots {slots} each (GENQ_SLOTS), lease TTL "
        f"{HANDOFF_LEASE_TTL_S:g} s; the main process of the worker running the job gets "
        f"SIGTERM once {WINDOWS_BEFORE_TERM} windows are checkpointed and the reader has seen "
        f"{_term_after(job):,} tokens; then it is restarted and warmed"
    )
    env = {"GENQ_SLOTS": str(slots), "GENQ_LEASE_TTL_S": str(HANDOFF_LEASE_TTL_S)}
    with local_stack(cache, env, workers=0) as stack, Client(stack.settings) as client:
        stack.start_worker("a")
        _warm(client, job, "a")
        others = [client.submit(_with(job, seed=(job.seed or 0) + 1 + n)) for n in range(slots - 1)]
        expected = client.submit(job).result(timeout=REFERENCE_TIMEOUT_S).text
        for other in others:
            other.result(timeout=REFERENCE_TIMEOUT_S)
        stack.start_worker("b")
        _warm(client, job, "b")
        results = _runs(
            args.handoff_runs, lambda _: _termed_run(stack, client, job, expected), stack
        )
    say(*_handoff_lines(results, job, slots - 1))


def _term_after(job: JobSpec) -> int:
    return int((WINDOWS_BEFORE_TERM + INTO_WINDOW) * _window(job))


def _warm(client: Client, job: JobSpec, name: str) -> None:
    """Short jobs until worker `name` ran one (its model loaded, its engine up)."""
    for _ in range(WARM_TRIES):
        handle = client.submit(_with(job, max_tokens=WARM_TOKENS, window_tokens=WARM_TOKENS))
        handle.result(timeout=STREAM_TIMEOUT_S)
        if holder(client, handle.job_id) == name:
            return
    raise FailoverFailed(f"no warm-up job ran on worker {name}")


@dataclass
class Exit:
    """The SIGTERMed worker's exit, waited for by a thread from the signal on (the stream
    goes on meanwhile); `code` None: still running after EXIT_TIMEOUT_S."""

    worker: Worker
    code: int | None = None
    at_ms: float | None = None

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()

    def _wait(self) -> None:
        assert self.worker.proc is not None
        try:
            self.code = self.worker.proc.wait(timeout=EXIT_TIMEOUT_S)
            self.at_ms = time.time_ns() / 1e6
        except subprocess.TimeoutExpired:
            return


def _termed_run(stack: Stack, client: Client, job: JobSpec, expected: str) -> RunResult:
    handle = client.submit(job)
    exits: list[Exit] = []

    def term(watch: Watch) -> float | None:
        if watch.tokens < _term_after(job) or watch.windows < WINDOWS_BEFORE_TERM:
            return None  # checked again at the next token frame
        worker = stack.worker(holder(client, handle.job_id))
        if worker.proc is None or any(
            w.proc is None or w.proc.poll() is not None for w in stack.workers
        ):
            raise FailoverFailed("a worker is not running before the signal")
        at = time.time_ns() / 1e6
        worker.proc.send_signal(signal.SIGTERM)  # the main process only, as a deploy does
        exits.append(Exit(worker))
        return at

    watch = Watch(term)
    try:
        same = _stream(client, handle.job_id, watch, expected)
    finally:  # the next run has two warm workers again, whatever became of this one
        if exits:
            exits[0].thread.join()
            exits[0].worker.stop()
            stack.start_worker(exits[0].worker.name)
            _warm(client, job, exits[0].worker.name)
    if not exits:
        raise FailoverFailed(f"job {handle.job_id}: ended before its windows were checkpointed")
    done, at = exits[0], watch.signalled_ms or 0.0
    return _timed(
        handle.job_id,
        watch,
        watch.tokens - watch.committed(),
        same,
        exit_code=done.code,
        exit_s=((done.at_ms or at) - at) / 1000,
        moved=holder(client, handle.job_id) != done.worker.name,
    )


def _handoff_lines(results: Results, job: JobSpec, neighbours: int) -> list[str]:
    lines = [f"{len(results.runs)} runs:"]
    lines += [f"  run FAILED: {failure}" for failure in results.failures]
    lines += [_run_line(n + 1, run) for n, run in enumerate(results.runs)]
    if not results.runs:
        return lines
    to_token = results.median("to_token_s")
    recomputed = [run.recomputed for run in results.runs]
    exits = [run.exit_s for run in results.runs if run.exit_code is not None]
    exited = f"SIGTERM -> exit median {statistics.median(exits):.2f} s, worst {max(exits):.2f} s"
    return [
        *lines,
        f"  SIGTERM -> first token of the new epoch (its ts_ms): median {to_token:.2f} s, worst "
        f"{results.worst('to_token_s'):.2f} s (target: median <= {HANDOFF_TARGET_S:g} s: "
        f"{met(to_token <= HANDOFF_TARGET_S)}); SIGTERM -> resume frame median "
        f"{results.median('to_resume_s'):.2f} s; as the reader got the token: median "
        f"{results.median('seen_s'):.2f} s",
        f"  tokens recomputed (epoch-0 tokens in the stream - committed_tokens): "
        f"{', '.join(map(str, recomputed))} (at most one window, {_window(job)}: "
        f"{met(max(recomputed) <= _window(job))}); finished on the other worker: "
        f"{results.count('moved')}",
        f"  streamed text = result = the uninterrupted run's beside {neighbours} other jobs: "
        f"{results.count('same_text')}",
        f"  signalled worker exited 0: {results.count('clean')}; "
        + (exited if exits else f"none exited within {EXIT_TIMEOUT_S:g} s"),
    ]


def _run_line(n: int, run: RunResult) -> str:
    code = "still running" if run.exit_code is None else str(run.exit_code)
    return (
        f"  run {n}: -> resume {run.to_resume_s:.3f} s, -> token {run.to_token_s:.3f} s (reader "
        f"{run.seen_s:.3f} s), recomputed {run.recomputed}, same text {run.same_text}, old "
        f"worker exit {code} after {run.exit_s:.2f} s"
    )
