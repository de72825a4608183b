"""Watching a run from outside: a progress counter and the CPU time of the processes involved,
sampled together, turned into sustained rates and shares of a core."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import psutil

SAMPLE_S = 0.25
WARM_S = 1.0  # left out at the start of a run: connections, first pipelines
INTERVAL_S = 1.0  # the span of the rates whose median is reported


@dataclass(frozen=True)
class Sample:
    at: float
    count: int
    cpu_s: Mapping[str, float]  # user + system seconds so far, by process role


@dataclass(frozen=True)
class Rate:
    """Sustained rate over a run's steady part, and the rates of its 1 s intervals."""

    per_s: float
    intervals: tuple[float, ...]
    seconds: float
    cpu: Mapping[str, float]  # share of one core, by role, over the same span

    @property
    def median_per_s(self) -> float:
        return statistics.median(self.intervals) if self.intervals else self.per_s

    def cpu_text(self) -> str:
        return ", ".join(f"{role} {share:.0%}" for role, share in self.cpu.items())


def merge(rates: Sequence[Rate]) -> Rate:
    """Runs of the same thing taken in turns with others: time-weighted, intervals pooled."""
    seconds = sum(rate.seconds for rate in rates)
    per_s = sum(rate.per_s * rate.seconds for rate in rates) / seconds
    roles = rates[0].cpu.keys()
    cpu = {role: sum(r.cpu[role] * r.seconds for r in rates) / seconds for role in roles}
    intervals = tuple(i for rate in rates for i in rate.intervals)
    return Rate(per_s, intervals, seconds, cpu)


class CpuClock:
    """User + system CPU seconds of named processes (the last value once one has exited)."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._procs = {role: psutil.Process(pid) for role, pid in pids.items()}
        self._last = dict.fromkeys(pids, 0.0)

    def read(self) -> dict[str, float]:
        for role, proc in self._procs.items():
            try:
                times = proc.cpu_times()
                children = _children_cpu(proc)
                self._last[role] = times.user + times.system + children
            except psutil.NoSuchProcess:
                pass
        return dict(self._last)


def _children_cpu(proc: psutil.Process) -> float:
    total = 0.0
    for child in proc.children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def sample_while(
    alive: Callable[[], bool], progress: Callable[[], int], clock: CpuClock
) -> list[Sample]:
    """Samples every SAMPLE_S while `alive()` (what follows is a drain, not load)."""
    samples = []
    while alive():
        samples.append(Sample(time.monotonic(), progress(), clock.read()))
        time.sleep(SAMPLE_S)
    return samples


def steady_rate(samples: Sequence[Sample]) -> Rate | None:
    """From WARM_S after the first progress to the last sample; None if too short."""
    started = next((s.at for s in samples if s.count > 0), None)
    if started is None:
        return None
    steady = [s for s in samples if s.at >= started + WARM_S]
    if len(steady) < 2 or steady[-1].at - steady[0].at <= 0:
        return None
    first, last = steady[0], steady[-1]
    span = last.at - first.at
    cpu = {role: (last.cpu_s[role] - first.cpu_s[role]) / span for role in first.cpu_s}
    return Rate((last.count - first.count) / span, _intervals(steady), span, cpu)


def _intervals(samples: Sequence[Sample]) -> tuple[float, ...]:
    rates, start = [], samples[0]
    for sample in samples[1:]:
        if sample.at - start.at >= INTERVAL_S:
            rates.append((sample.count - start.count) / (sample.at - start.at))
            start = sample
    return tuple(rates)


def wait_until(progress: Callable[[], int], target: int, timeout_s: float) -> bool:
    """True once `progress()` reaches `target`; False when `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    while progress() < target:
        if time.monotonic() > deadline:
            return False
        time.sleep(SAMPLE_S / 5)
    return True
