"""Processes another command started: found again by pid, told apart from a recycled pid by
their start time, and stopped with their whole process group.

`ops/stack up` starts every process of the stack in a session (and so a process group) of its
own and records its pid and start time; `ops/stack down`, a later command, stops them from
that record. On Linux the start time comes from /proc/<pid>/stat (clock ticks since boot); a
process with the recorded pid but another start time is someone else's and is never signalled.
Elsewhere (no /proc) a live pid is trusted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ops.localstack import StackError

PROC = Path("/proc")
STOP_GRACE_S = 10.0  # Celery's warm shutdown finishes the current chunk of work within this
KILL_WAIT_S = 10.0
POLL_S = 0.1
DEAD_STATES = frozenset("ZXx")  # zombie (dead, not reaped yet), dead


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat that tell whose and how alive a process is."""

    state: str  # R, S, D, T, Z (zombie: dead, not yet reaped), X ...
    pgid: int
    start_time: int  # clock ticks after boot


def proc_stat(pid: int) -> ProcStat | None:
    """/proc/<pid>/stat, or None when there is no such process (or no /proc)."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may hold spaces and parentheses itself.
    fields = raw[raw.rindex(")") + 2 :].split()
    return ProcStat(state=fields[0], pgid=int(fields[2]), start_time=int(fields[19]))


def has_proc() -> bool:
    return (PROC / "self" / "stat").exists()


def start_time(pid: int) -> int | None:
    """The process's start time, to record beside its pid; None without /proc."""
    stat = proc_stat(pid)
    return stat.start_time if stat is not None else None


@dataclass(frozen=True)
class Recorded:
    """A process as recorded when it was started: it leads its own process group."""

    pid: int
    start_time: int | None

    def alive(self) -> bool:
        """It runs: same pid, same start time, not a zombie."""
        if not has_proc():
            return _answers(os.kill, self.pid)
        stat = proc_stat(self.pid)
        return stat is not None and _running(stat) and stat.start_time == self.start_time

    def recycled(self) -> bool:
        """Its pid now belongs to another process: neither it nor that group is ours."""
        if self.start_time is None or not has_proc():
            return False
        stat = proc_stat(self.pid)
        return stat is not None and stat.start_time != self.start_time

    def group_alive(self) -> bool:
        """Any process of its group still runs (the leader, or children it left behind)."""
        return _any_alive([self])

    def signal_group(self, sig: signal.Signals) -> None:
        if self.recycled():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)


def stop_groups(processes: Iterable[Recorded], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM each one's group (together, so that they shut down side by side), then SIGKILL
    what still runs after `grace_s`; returns once none runs."""
    targets = [p for p in processes if p.group_alive()]
    for process in targets:
        process.signal_group(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        process.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _any_alive(targets) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    for process in targets:
        if process.group_alive():
            process.signal_group(signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    while _any_alive(targets):
        if time.monotonic() > deadline:
            left = ", ".join(str(p.pid) for p in targets if p.group_alive())
            raise StackError(f"process groups {left} still run after SIGKILL")
        time.sleep(POLL_S)


def with_environment(name: str, value: str) -> list[int]:
    """Pids of this user's live processes whose environment has `name=value` (Linux only)."""
    wanted = f"{name}={value}".encode()
    found = []
    for pid in _pids():
        try:
            environ = (PROC / str(pid) / "environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        stat = proc_stat(pid)
        if wanted in environ.split(b"\0") and stat is not None and _running(stat):
            found.append(pid)
    return found


def _any_alive(processes: Iterable[Recorded]) -> bool:
    """Whether a process of any of their groups runs (one pass over /proc for all)."""
    ours = [p for p in processes if not p.recycled()]
    if not has_proc():
        return any(_answers(os.killpg, p.pid) for p in ours)
    groups = _running_groups()
    return any(p.pid in groups for p in ours)


def _running(stat: ProcStat) -> bool:
    return stat.state not in DEAD_STATES


def _running_groups() -> set[int]:
    stats = (proc_stat(pid) for pid in _pids())
    return {stat.pgid for stat in stats if stat is not None and _running(stat)}


def _pids() -> Iterator[int]:
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def _answers(kill: Callable[[int, int], None], target: int) -> bool:
    """Signal 0 (none) reaches the process, or the group: it exists. Where there is no /proc."""
    try:
        kill(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: it exists all the same
        pass
    return True
