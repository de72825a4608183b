"""The cost of GENQ_REDIS_WAIT_REPLICAS: submit and checkpoint throughput with and without
the replica wait, measured in the same run on a primary and its replica on loopback.

    .venv/bin/python -m ops.replica_wait [--jobs 500] [--window-tokens 4]

- submit: jobs/s of one client submitting one job at a time (each submit's WAIT is a round
  trip more, and as long as the replica takes to confirm), and of a batch.
- checkpoint: a worker and the relay run jobs of many short windows (`--window-tokens`);
  windows checkpointed per second end to end (the relay WAITs once per batch of frames that
  holds a window, before it streams them).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from genq import Client
from ops.localstack import RedisServer, Relay, Worker, settings_for, wait_for

TOKENS = 64  # per checkpoint job


@contextmanager
def replicated(root: Path) -> Iterator[str]:
    """A primary and its replica in sync; -> the primary's URL."""
    primary = RedisServer(workdir=root / "primary").start()
    replica = RedisServer(
        workdir=root / "replica", args=("--replicaof", primary.host, str(primary.port))
    ).start()
    try:
        link = redis.Redis(replica.host, replica.port)
        wait_for(lambda: link.info("replication")["master_link_status"] == "up", 30, "replica")
        yield primary.url
    finally:
        replica.stop()
        primary.stop()


def submits(env: dict[str, str], jobs: int) -> tuple[float, float]:
    """Jobs/s submitting one at a time, and in one batch (no worker: they stay queued)."""
    with Client(settings_for(env)) as client:
        started = time.perf_counter()
        for n in range(jobs):
            client.submit("a", model="tiny", max_tokens=4, seed=n)
        one = jobs / (time.perf_counter() - started)
        lines = [{"custom_id": f"c{n}", "prompt": "a", "model": "tiny"} for n in range(jobs)]
        started = time.perf_counter()
        client.submit_batch(lines)
        return one, jobs / (time.perf_counter() - started)


def checkpoints(env: dict[str, str], root: Path, jobs: int, window_tokens: int) -> float:
    """Windows checkpointed per second by a worker and the relay running `jobs` jobs."""
    procs = [
        Relay(env=env, log=root / "relay.log").start(),
        Worker(env=env, log=root / "worker.log", args=("--models", "tiny", "--slots", "8")),
    ]
    procs[1].start()
    try:
        with Client(settings_for(env)) as client:
            spec: dict[str, Any] = {
                "max_tokens": TOKENS,
                "window_tokens": window_tokens,
                "ignore_eos": True,
            }
            started = time.perf_counter()
            handles = [client.submit("a", model="tiny", seed=n, **spec) for n in range(jobs)]
            for handle in handles:
                handle.result(timeout=600)
            seconds = time.perf_counter() - started
        return jobs * (TOKENS // window_tokens) / seconds
    finally:
        for proc in reversed(procs):
            proc.stop()


def measure(wait: int, args: argparse.Namespace) -> tuple[float, float, float]:
    root = Path(tempfile.mkdtemp(prefix=f"genq-wait{wait}-"))
    with replicated(root) as url:
        env = {"GENQ_REDIS_URL": url, "GENQ_REDIS_WAIT_REPLICAS": str(wait)}
        env |= {"GENQ_METRICS_PORT": "0", "GENQ_RELAY_METRICS_PORT": "0"}
        one, batch = submits(env, args.jobs)
        return one, batch, checkpoints(env, root, args.jobs // 5, args.window_tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--window-tokens", type=int, default=4)
    args = parser.parse_args()
    off, on = measure(0, args), measure(1, args)
    names = ("submit, one at a time (jobs/s)", "submit, a batch (jobs/s)", "checkpoints/s")
    print(f"{'':34} {'no wait':>10} {'WAIT 1':>10} {'ratio':>7}")
    for name, plain, waited in zip(names, off, on, strict=True):
        print(f"{name:34} {plain:10.0f} {waited:10.0f} {waited / plain:7.2f}")


if __name__ == "__main__":
    main()
