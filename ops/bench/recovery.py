"""Recovery: SIGKILL the worker running a long windowed job while a second worker idles, and
measure how long the job's stream goes without tokens, how much was computed twice, and
whether the final text is the uninterrupted run's.

Per lease TTL, one stack (redis-server, relay, two workers); per run, one job killed in the
middle of a window (a different window each run), then the killed worker restarted. The
clock is this process's wall clock at the kill against the frames' `ts_ms` (same machine).

Tokens recomputed by a resume = tokens the killed attempt generated - the resume frame's
`committed_tokens`. The killed attempt's count is its token frames in the stream plus those
it made after its last frame and before the kill, estimated at its own rate (its frames'
tokens over their `ts_ms` span); it may have sampled up to 2 more, ahead of its job's thread
(workers/engine.py's AHEAD). So that kills do not all land just after a flush (the frame that
triggers them), each waits a run-dependent delay, 0 to 90 ms, past that frame.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genq import Client, JobFailed, JobHandle, StreamTimeout
from genq.common.frames import Frame, ResumeFrame, TokenFrame
from ops.bench.report import TINY, met, say
from ops.bench.stack import Stack, local_stack

STREAM_TIMEOUT_S = 180.0
SLACK_S = 2.0  # target: next token within lease TTL + this
FIRST_KILL_WINDOW = 5
KILL_WINDOW_STEP = 9
KILL_INTO_WINDOW = 0.5  # share of a window produced before the kill
KILL_DELAYS_S = tuple(n / 100 for n in range(10))  # after the triggering frame, by run
# Job size and window (tokens) unless the command line says: the tiny model makes thousands
# of tokens a second, a real model tens.
TINY_JOB = (4000, 100)
REAL_JOB = (240, 40)


@dataclass(frozen=True)
class RecoveryJob:
    max_tokens: int
    window_tokens: int
    seed: int = 77
    model: str = "tiny"

    def fields(self) -> dict[str, Any]:
        return {
            "prompt": "failover",
            "model": self.model,
            "max_tokens": self.max_tokens,
            "window_tokens": self.window_tokens,
            "seed": self.seed,
            "ignore_eos": True,
        }

    def kill_after(self, run: int) -> int:
        """Tokens of epoch 0 the reader sees before the kill: mid-window, later each run."""
        windows = self.max_tokens // self.window_tokens
        window = (FIRST_KILL_WINDOW + KILL_WINDOW_STEP * run) % max(windows - 2, 1)
        return int((max(window, 1) + KILL_INTO_WINDOW) * self.window_tokens)


@dataclass
class Watch:
    """What the reader saw of one killed job."""

    kill_after: int
    killed_ms: float | None = None
    resume_ms: int | None = None  # the resume frame's ts_ms
    token_ms: int | None = None  # the first epoch-1 token frame's ts_ms
    token_seen_ms: float | None = None  # when this reader got it
    epoch0_tokens: int = 0

    def see(self, frame: Frame, kill: Any) -> None:
        if isinstance(frame, TokenFrame) and frame.epoch == 0:
            self.epoch0_tokens += len(frame.data.token_ids)
            if self.killed_ms is None and self.epoch0_tokens >= self.kill_after:
                kill()
                self.killed_ms = time.time_ns() / 1e6
        elif isinstance(frame, ResumeFrame) and self.resume_ms is None:
            self.resume_ms = frame.ts_ms
        elif isinstance(frame, TokenFrame) and self.token_ms is None and frame.epoch >= 1:
            self.token_ms = frame.ts_ms
            self.token_seen_ms = time.time_ns() / 1e6


@dataclass(frozen=True)
class RunResult:
    to_resume_s: float
    to_token_s: float  # kill to the first token frame of epoch 1, by its ts_ms
    seen_s: float  # kill to the reader receiving that frame
    recomputed: int  # tokens the killed attempt generated beyond the resume's committed ones
    same_text: bool
    epochs: int


@dataclass
class TtlResult:
    ttl_s: float
    reap_interval_s: float
    chunk_tokens: int
    runs: list[RunResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def median(self, name: str) -> float:
        return float(statistics.median(getattr(run, name) for run in self.runs))

    def worst(self, name: str) -> float:
        return float(max(getattr(run, name) for run in self.runs))


def measure(cache: Path, job: RecoveryJob, ttls: Sequence[float], runs: int) -> list[TtlResult]:
    return [_measure_ttl(cache, job, ttl, runs) for ttl in ttls]


def _measure_ttl(cache: Path, job: RecoveryJob, ttl: float, runs: int) -> TtlResult:
    env = {"GENQ_LEASE_TTL_S": str(ttl)}
    with local_stack(cache, env, workers=2) as stack, Client(stack.settings) as client:
        settings = stack.settings
        result = TtlResult(ttl, settings.reap_interval_s, settings.chunk_tokens)
        expected = _warm_up(client, job)
        for run in range(runs):
            try:
                result.runs.append(_one_run(stack, client, job, run, expected))
            except (RecoveryFailed, JobFailed, StreamTimeout) as exc:
                result.failures.append(str(exc))
            stack.check_alive()
        return result


class RecoveryFailed(RuntimeError):
    """A killed job did not resume as expected; the message says what was seen."""


def _warm_up(client: Client, job: RecoveryJob) -> str:
    """The uninterrupted text, while a second job warms the other worker's model."""
    other = client.submit(**{**job.fields(), "max_tokens": job.window_tokens})
    text = client.submit(**job.fields()).result(timeout=STREAM_TIMEOUT_S).text
    other.result(timeout=STREAM_TIMEOUT_S)
    return text


def _one_run(stack: Stack, client: Client, job: RecoveryJob, run: int, expected: str) -> RunResult:
    handle = client.submit(**job.fields())
    watch = Watch(job.kill_after(run))
    killed: list[str] = []

    def kill() -> None:
        time.sleep(KILL_DELAYS_S[run % len(KILL_DELAYS_S)])
        killed.append(holder(client, handle.job_id))
        stack.worker(killed[0]).signal(signal.SIGKILL)

    frames: list[Frame] = []
    try:
        with handle.stream(timeout=STREAM_TIMEOUT_S) as stream:
            for frame in stream:
                frames.append(frame)
                watch.see(frame, kill)
            text, result = stream.text, stream.result
    finally:  # the next run has two workers again, whatever became of this one
        if killed:
            stack.worker(killed[0]).stop()  # reaps it
            stack.start_worker(killed[0])
    return _result(handle, frames, watch, text == result.text == expected)


def holder(client: Client, job_id: str) -> str:
    """The name of the worker running the job now (its node is `name@host`)."""
    return client.record(job_id).worker.partition("@")[0]


def _result(handle: JobHandle, frames: list[Frame], watch: Watch, same: bool) -> RunResult:
    if watch.killed_ms is None or watch.resume_ms is None or watch.token_ms is None:
        raise RecoveryFailed(
            f"job {handle.job_id}: killed {watch.killed_ms is not None}, resumed "
            f"{watch.resume_ms is not None}, epoch-1 token {watch.token_ms is not None}"
        )
    resume = next(f for f in frames if isinstance(f, ResumeFrame))
    seen = (watch.token_seen_ms or watch.token_ms) - watch.killed_ms
    made = generated(frames, watch.killed_ms)
    return RunResult(
        to_resume_s=(watch.resume_ms - watch.killed_ms) / 1000,
        to_token_s=(watch.token_ms - watch.killed_ms) / 1000,
        seen_s=seen / 1000,
        recomputed=round(made - resume.data.committed_tokens),
        same_text=same,
        epochs=max(f.epoch for f in frames) + 1,
    )


def generated(frames: Sequence[Frame], stopped_ms: float) -> float:
    """Tokens epoch 0 generated until `stopped_ms`: those it streamed, and those its own rate
    made between its last token frame and then."""
    chunks = [f for f in frames if isinstance(f, TokenFrame) and f.epoch == 0]
    streamed = sum(len(f.data.token_ids) for f in chunks)
    span_ms = chunks[-1].ts_ms - chunks[0].ts_ms
    rate = (streamed - len(chunks[0].data.token_ids)) / span_ms if span_ms > 0 else 0.0
    return streamed + rate * max(stopped_ms - chunks[-1].ts_ms, 0.0)


def section(args: argparse.Namespace, cache: Path) -> None:
    tokens, window = TINY_JOB if args.model == TINY else REAL_JOB
    job = RecoveryJob(
        args.recovery_tokens or tokens, args.recovery_window or window, model=args.model
    )
    kills = ", ".join(f"{job.kill_after(run):,}" for run in range(args.recovery_runs))
    say(
        f"job: {job.max_tokens:,} tokens in windows of {job.window_tokens} on {job.model!r}, "
        f"seed {job.seed}, EOS banned; two workers; the one running the job is SIGKILLed "
        f"(its process group) when the reader has seen {kills} tokens, then restarted"
    )
    for result in measure(cache, job, args.lease_ttls, args.recovery_runs):
        say(*describe(result, job))


def describe(result: TtlResult, job: RecoveryJob) -> list[str]:
    head = f"lease TTL {result.ttl_s:g} s (reap interval {result.reap_interval_s:g} s)"
    lines = [f"{head}, {len(result.runs)} runs:"]
    lines += [f"  run FAILED: {failure}" for failure in result.failures]
    if not result.runs:
        return lines
    target = result.ttl_s + SLACK_S
    worst = result.worst("to_token_s")
    recomputed = [run.recomputed for run in result.runs]
    tail = 2 * result.chunk_tokens  # what may not have reached the stream: a chunk or two
    same = sum(run.same_text for run in result.runs)
    to_token, to_resume = result.median("to_token_s"), result.median("to_resume_s")
    lines += [
        f"  kill -> first token of the new epoch (its ts_ms): median {to_token:.2f} s, worst "
        f"{worst:.2f} s (target <= TTL + {SLACK_S:g} s = {target:g} s: {met(worst <= target)}); "
        f"kill -> resume frame median {to_resume:.2f} s; as the reader got the token: median "
        f"{result.median('seen_s'):.2f} s",
        f"  tokens recomputed per resume (generated by the killed attempt - committed_tokens): "
        f"median {statistics.median(recomputed):g} in windows of {job.window_tokens} "
        f"(target <= the uncommitted tail, 2 chunks of {result.chunk_tokens}: "
        f"{met(statistics.median(recomputed) <= tail)}); each: {', '.join(map(str, recomputed))}",
        "  final text equals the uninterrupted run: "
        f"{'yes' if same == len(result.runs) else 'NO'} ({same}/{len(result.runs)})",
    ]
    return lines
