"""`make demo`'s script as a user runs it, on the tiny model (`--model tiny`, fast): every part
streams, and its headline holds: the job whose worker it SIGKILLs mid-stream resumes on the
other worker and ends with the text of an undisturbed run (the demo checks it; exit 1 if not).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

pytestmark = pytest.mark.timeout(300)


def test_demo_streams_every_part_and_the_killed_workers_job_ends_identical(
    genq_env: dict[str, str],
) -> None:
    # Only the cache: the demo starts its own Redis, relay and workers, and brings them down.
    env = {name: v for name, v in os.environ.items() if not name.startswith("GENQ_")}
    env |= {"GENQ_CACHE_DIR": genq_env["GENQ_CACHE_DIR"], "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run(
        [sys.executable, "-m", "ops.demo", "--model", "tiny"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    for part in ("a plain prompt", "a chat", "continuation windows", "a batch", "an early stop"):
        assert part in out, part
    assert "finish cancelled" in out  # the early stop
    assert "SIGKILL worker" in out and "resumed" in out
    assert "identical to the uninterrupted run" in out
    assert "demo finished" in out
