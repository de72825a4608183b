"""Failover: stop the worker running a long windowed job while a second one idles; how long
its stream goes without tokens (this process's wall clock at the signal against the frames'
`ts_ms`), how much is computed twice, and whether its text is the uninterrupted run's.
recovery kills 0 to 90 ms past the triggering frame, so that kills do not all land just after
a flush. handoff's reference text is the job's beside `slots - 1` neighbours (other seeds);
the signalled runs decode it alone.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
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
# Job size and window (tokens) unless the command line says, on tiny and on a real model.
SIZES = {"recovery": ((4000, 100), (240, 40)), "handoff": ((20_000, 100), (400, 40))}


@dataclass
class Watch:
    """What the reader saw of one stopped job, and its figures. `signal` is called at each
    epoch-0 token frame until it returns the wall clock (ms) it signalled at."""

    job_id: str
    signal: Callable[[Watch], float | None]
    frames: list[Frame] = field(default_factory=list)
    signalled_ms: float | None = None
    resume_ms: int | None = None  # the new epoch's resume frame's ts_ms
    token_ms: int | None = None  # the new epoch's first token frame's ts_ms
    token_seen_ms: float | None = None  # when this reader got it
    tokens: int = 0  # epoch 0's, streamed
    windows: int = 0  # epoch 0's window frames: the relay checkpoints before it writes one
    same_text: bool = False  # the streamed text is the result's, and the reference's
    to_resume_s = to_token_s = seen_s = 0.0  # from the signal, by the frames' ts_ms; as read
    recomputed: int = 0
    clean: bool = True  # the SIGTERMed worker exited 0
    exit_s: float | None = None  # signal to its exit; None: it did not exit
    moved: bool = True  # the job ended on the other worker

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

    def finish(self, generated: float, **more: Any) -> Watch:
        """The run's figures; `generated`: tokens epoch 0 made, less the resume frame's
        `committed_tokens` is what was computed twice."""
        at, resume, token = self.signalled_ms, self.resume_ms, self.token_ms
        if at is None or resume is None or token is None:
            raise FailoverFailed(
                f"job {self.job_id}: signalled {at is not None}, resumed {resume is not None}, "
                f"new-epoch token {token is not None}"
            )
        committed = next(f.data.committed_tokens for f in self.frames if isinstance(f, ResumeFrame))
        self.to_resume_s, self.to_token_s = (resume - at) / 1000, (token - at) / 1000
        self.seen_s = ((self.token_seen_ms or token) - at) / 1000
        self.recomputed = round(generated - committed)
        vars(self).update(more)
        return self


@dataclass
class Results:
    runs: list[Watch] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def median(self, name: str) -> float:
        return float(statistics.median(getattr(run, name) for run in self.runs))

    def count(self, name: str) -> str:
        n = sum(bool(getattr(run, name)) for run in self.runs)
        return f"{'yes' if n == len(self.runs) else 'NO'} ({n}/{len(self.runs)})"

    def lines(self, head: str, what: str, target: str, ok: bool) -> list[str]:
        """The figures both sections print; `target` and `ok` judge the signal -> token."""
        lines = [f"{head}, {len(self.runs)} runs:", *(f"  run FAILED: {f}" for f in self.failures)]
        if self.runs:
            worst = max(run.to_token_s for run in self.runs)
            lines.append(
                f"  {what} -> first token of the new epoch (its ts_ms): median "
                f"{self.median('to_token_s'):.2f} s, worst {worst:.2f} s (target {target}: "
                f"{met(ok)}); {what} -> resume frame median {self.median('to_resume_s'):.2f} s; "
                f"as the reader got the token: median {self.median('seen_s'):.2f} s"
            )
        return lines


class FailoverFailed(RuntimeError):
    """A stopped job did not resume as expected; the message says what was seen."""


def _job(args: argparse.Namespace, name: str, model: str) -> tuple[JobSpec, int, str]:
    """The section's job, its window and its description."""
    tokens, window = SIZES[name][args.model != TINY]
    window = getattr(args, f"{name}_window") or window
    tokens = getattr(args, f"{name}_tokens") or tokens
    spec = JobSpec(prompt=name, model=model, max_tokens=tokens, window_tokens=window, seed=77)
    described = f"job: {tokens:,} tokens in windows of {window} on {model!r}, seed 77, EOS banned"
    return spec.model_copy(update={"ignore_eos": True}), window, described


def _runs(runs: int, one: Callable[[int], Watch], stack: Stack) -> Results:
    results = Results()
    for run in range(runs):
        try:
            results.runs.append(one(run))
        except (FailoverFailed, JobFailed, StreamTimeout) as exc:
            results.failures.append(str(exc))
        stack.check_alive()
    return results


def _watched(
    client: Client,
    job: JobSpec,
    expected: str,
    signal_: Callable[[Watch], float | None],
    after: Callable[[], None],
) -> Watch:
    """The job submitted and its stream read to the end, `signal_` called on the way, `after`
    however it ends."""
    watch = Watch(client.submit(job).job_id, signal_)
    try:
        with client.job(watch.job_id).stream(timeout=STREAM_TIMEOUT_S) as stream:
            for frame in stream:
                watch.see(frame)
            watch.same_text = stream.text == stream.result.text == expected
            return watch
    finally:
        after()


def holder(client: Client, job_id: str) -> str:
    """The name of the worker running the job now (its node is `name@host`)."""
    return client.record(job_id).worker.partition("@")[0]


def recovery(args: argparse.Namespace, cache: Path) -> None:
    """SIGKILL the worker of a long windowed job, a second worker idle, per lease TTL: kill ->
    next token (target <= TTL + 2 s), tokens recomputed per resume (target: median <= 2
    chunks), final text = uninterrupted."""
    job, window, described = _job(args, "recovery", args.model)
    kills = ", ".join(f"{_kill_after(job, window, run):,}" for run in range(args.recovery_runs))
    say(
        f"{described}; two workers; the one running the job is SIGKILLed (its process "
        f"group) when the reader has seen {kills} tokens, then restarted"
    )
    for ttl in args.lease_ttls:
        env = {"GENQ_LEASE_TTL_S": str(ttl)}
        with local_stack(cache, env, workers=2) as stack, Client(stack.settings) as client:
            other = client.submit(job.model_copy(update={"max_tokens": window}))  # warm both
            expected = client.submit(job).result(timeout=STREAM_TIMEOUT_S).text
            other.result(timeout=STREAM_TIMEOUT_S)
            one = functools.partial(_kill_run, stack, client, job, window, expected)
            results = _runs(args.recovery_runs, one, stack)
        reap, chunk = stack.settings.reap_interval_s, stack.settings.chunk_tokens
        worst = max((run.to_token_s for run in results.runs), default=0.0)
        target = f"<= TTL + {SLACK_S:g} s = {ttl + SLACK_S:g} s"
        head = f"lease TTL {ttl:g} s (reap interval {reap:g} s)"
        say(*results.lines(head, "kill", target, worst <= ttl + SLACK_S))
        if results.runs:
            recomputed = [run.recomputed for run in results.runs]
            median = statistics.median(recomputed)
            say(
                f"  tokens recomputed per resume (generated by the killed attempt - "
                f"committed_tokens): median {median:g} in windows of {window} (target <= the "
                f"uncommitted tail, 2 chunks of {chunk}: {met(median <= 2 * chunk)}); each: "
                f"{', '.join(map(str, recomputed))}",
                f"  final text equals the uninterrupted run: {results.count('same_text')}",
            )


def _kill_after(job: JobSpec, window: int, run: int) -> int:
    """Tokens of epoch 0 the reader sees before the kill: mid-window, later each run."""
    n = (FIRST_KILL_WINDOW + KILL_WINDOW_STEP * run) % max(job.max_tokens // window - 2, 1)
    return int((max(n, 1) + INTO_WINDOW) * window)


def _kill_run(
    stack: Stack, client: Client, job: JobSpec, window: int, expected: str, run: int
) -> Watch:
    killed: list[str] = []

    def kill(watch: Watch) -> float | None:
        if watch.tokens < _kill_after(job, window, run):
            return None
        time.sleep(KILL_DELAYS_S[run % len(KILL_DELAYS_S)])
        killed.append(holder(client, watch.job_id))
        stack.worker(killed[0]).signal(signal.SIGKILL)
        return time.time_ns() / 1e6

    def restart() -> None:  # the next run has two workers again, whatever became of this
        for name in killed:
            stack.worker(name).stop()  # reaps it
            stack.start_worker(name)

    watch = _watched(client, job, expected, kill, restart)
    return watch.finish(_generated(watch.frames, watch.signalled_ms or 0.0))


def _generated(frames: Sequence[Frame], stopped_ms: float) -> float:
    """Tokens epoch 0 generated until `stopped_ms`: those it streamed, and those its own rate
    made between its last token frame and then."""
    chunks = [f for f in frames if isinstance(f, TokenFrame) and f.epoch == 0]
    streamed = sum(len(f.data.token_ids) for f in chunks)
    span_ms = chunks[-1].ts_ms - chunks[0].ts_ms
    rate = (streamed - len(chunks[0].data.token_ids)) / span_ms if span_ms > 0 else 0.0
    return streamed + rate * max(stopped_ms - chunks[-1].ts_ms, 0.0)


def handoff(args: argparse.Namespace, cache: Path) -> None:
    """SIGTERM the worker running a long windowed job past its third window, a second warm
    worker idle, both --slots 8: SIGTERM -> first token of the new epoch (target: median <=
    0.5 s), tokens recomputed, the old worker's exit, streamed text = result = the job
    uninterrupted beside 7 others."""
    job, window, described = _job(args, "handoff", job_model(args.model))
    slots = args.handoff_slots
    after = int((WINDOWS_BEFORE_TERM + INTO_WINDOW) * window)
    say(
        f"{described}; workers a and b, --slots {slots} each (GENQ_SLOTS), lease TTL "
        f"{HANDOFF_LEASE_TTL_S:g} s; the main process of the worker running the job gets "
        f"SIGTERM once {WINDOWS_BEFORE_TERM} windows are checkpointed and the reader has seen "
        f"{after:,} tokens; then it is restarted and warmed"
    )
    env = {"GENQ_SLOTS": str(slots), "GENQ_LEASE_TTL_S": str(HANDOFF_LEASE_TTL_S)}
    with local_stack(cache, env, workers=0) as stack, Client(stack.settings) as client:
        _warm(stack, client, job, "a")
        seeds = [(job.seed or 0) + 1 + n for n in range(slots - 1)]
        others = [client.submit(job.model_copy(update={"seed": seed})) for seed in seeds]
        expected = client.submit(job).result(timeout=REFERENCE_TIMEOUT_S).text
        for other in others:
            other.result(timeout=REFERENCE_TIMEOUT_S)
        _warm(stack, client, job, "b")
        one = functools.partial(_term_run, stack, client, job, expected, after)
        results = _runs(args.handoff_runs, one, stack)
    median = results.median("to_token_s") if results.runs else 0.0
    target = f"median <= {HANDOFF_TARGET_S:g} s"
    say(*results.lines("hand-off", "SIGTERM", target, median <= HANDOFF_TARGET_S))
    if results.runs:
        recomputed = [run.recomputed for run in results.runs]
        exits = [run.exit_s for run in results.runs if run.exit_s is not None]
        exit_s = (
            f"median {statistics.median(exits):.2f} s, worst {max(exits):.2f} s" if exits else ""
        )
        say(
            f"  tokens recomputed (epoch-0 tokens in the stream - committed_tokens): "
            f"{', '.join(map(str, recomputed))} (at most one window, {window}: "
            f"{met(max(recomputed) <= window)}); finished on the other worker: "
            f"{results.count('moved')}",
            f"  streamed text = result = the uninterrupted run's beside {slots - 1} other jobs: "
            f"{results.count('same_text')}",
            f"  signalled worker exited 0: {results.count('clean')}; SIGTERM -> exit "
            f"{exit_s or f'none within {EXIT_TIMEOUT_S:g} s'}",
        )


def _warm(stack: Stack, client: Client, job: JobSpec, name: str) -> None:
    """Worker `name` started, then short jobs until it ran one (its model loaded)."""
    stack.start_worker(name)
    warm = job.model_copy(update={"max_tokens": WARM_TOKENS, "window_tokens": WARM_TOKENS})
    for _ in range(WARM_TRIES):
        handle = client.submit(warm)
        handle.result(timeout=STREAM_TIMEOUT_S)
        if holder(client, handle.job_id) == name:
            return
    raise FailoverFailed(f"no warm-up job ran on worker {name}")


def _term_run(
    stack: Stack, client: Client, job: JobSpec, expected: str, after: int, _: int
) -> Watch:
    exited: dict[str, Any] = {}  # the worker, its exit status and when

    def term(watch: Watch) -> float | None:
        if watch.tokens < after or watch.windows < WINDOWS_BEFORE_TERM:
            return None  # checked again at the next token frame
        worker = stack.worker(holder(client, watch.job_id))
        if any(w.proc is None or w.proc.poll() is not None for w in stack.workers):
            raise FailoverFailed("a worker is not running before the signal")
        at = time.time_ns() / 1e6
        assert worker.proc is not None  # checked just above
        worker.proc.send_signal(signal.SIGTERM)  # the main process only, as a deploy does
        exited["worker"] = worker
        exited["thread"] = threading.Thread(target=_exit, args=(worker.proc, exited))
        exited["thread"].start()
        return at

    def restart() -> None:  # the next run has two warm workers again
        if exited:
            exited["thread"].join()
            exited["worker"].stop()
            _warm(stack, client, job, exited["worker"].name)

    watch = _watched(client, job, expected, term, restart)
    if not exited:
        raise FailoverFailed(f"job {watch.job_id}: ended before its windows were checkpointed")
    at, moved = watch.signalled_ms or 0.0, holder(client, watch.job_id) != exited["worker"].name
    exit_s = (exited["at_ms"] - at) / 1000 if "at_ms" in exited else None
    return watch.finish(watch.tokens, clean=exited.get("code") == 0, exit_s=exit_s, moved=moved)


def _exit(proc: subprocess.Popen[bytes], exited: dict[str, Any]) -> None:
    """The signalled worker's exit status and time, waited for while the stream goes on."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        exited["code"] = proc.wait(timeout=EXIT_TIMEOUT_S)
        exited["at_ms"] = time.time_ns() / 1e6
