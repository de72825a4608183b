"""A safety net for the benchmark's processes: every process it starts inherits a marker in
its environment, and on the way out any marked process still running is stopped, by pid.

Each process is stopped by whoever started it; the sweep is for what escapes that, such as
a child whose `subprocess.Popen` call a Ctrl-C interrupted before it returned (the child runs
on, and nobody holds its handle).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

MARKER = "OPS_BENCH_RUN"
GRACE_S = 5.0


@contextmanager
def marked(run_id: str) -> Iterator[None]:
    """Children started inside carry `OPS_BENCH_RUN=run_id`; strays are stopped after."""
    os.environ[MARKER] = run_id
    try:
        yield
    finally:
        stop_strays(run_id)
        os.environ.pop(MARKER, None)


def strays(run_id: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(MARKER) == run_id:
                found.append(proc)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def stop_strays(run_id: str) -> None:
    left = strays(run_id)
    if not left:
        return
    names = ", ".join(f"{p.pid} {' '.join(_cmdline(p))[:60]}" for p in left)
    print(f"stopping {len(left)} process(es) left behind: {names}", file=sys.stderr)
    for proc in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _gone, alive = psutil.wait_procs(left, timeout=GRACE_S)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=GRACE_S)


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return list(proc.cmdline())
    except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
        return ["?"]
