"""The failover figure: from SIGKILL of Redis's primary to the first token of a running
stream written on the primary the Sentinels promoted, median of ROUNDS.

    sudo .venv/bin/python -m ops.failover [--rounds 5] [--lease-ttl-s 2]

Hosts as in the hosts tier (ops/netns.py): the primary on `redis`, its replica on `redis2`,
three Sentinels (on `redis`, `redis2`, `gw`; down-after 1 s: ops.sentinels), the relay on
`gw` and a worker on `w1`, all given the Sentinel URL. Each round starts a fresh replicated
Redis, runs a long job, kills the primary once tokens flow, and times the first token frame
the new primary holds beyond what the replica had when the primary died. Needs root and
`ip`; everything it made is removed at the end.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import time
from pathlib import Path
from typing import Any

import redis

from genq import Client
from genq.common.store import run, streams
from ops import netns
from ops.localstack import Relay, Worker, settings_for, wait_for
from ops.partition import TOKEN
from ops.sentinels import DOWN_AFTER_MS, ReplicatedRedis

ROUNDS = 5
LONG: dict[str, Any] = {"prompt": "failover", "max_tokens": 1_000_000, "ignore_eos": True}
POLL_S = 0.005  # how finely the first token is timed
HOSTS = ("redis", "redis2", "gw", "w1")
# The worker abandons its job when it loses Redis and the relay resumes it once the lease
# lapses: the figure is about the failover plus this (GENQ_LEASE_TTL_S; its default is 30 s).
LEASE_TTL_S = 2.0


def tokens(client: Client, job_id: str) -> int:
    """Token frames in the job's stream, as the server `client` reaches holds it."""
    frames = run(client.redis, streams.raw_frames(client.keys, job_id))
    return sum(TOKEN in frame for _, frame in frames)


def reachable_tokens(client: Client, job_id: str) -> int:
    """`tokens`, or 0 while the Sentinels still name the dead primary."""
    try:
        return tokens(client, job_id)
    except (redis.ConnectionError, redis.TimeoutError):
        return 0


def replicated(net: netns.Network) -> ReplicatedRedis:
    def place(name: str) -> tuple[str, tuple[str, ...]]:
        return net[name].address, net[name].exec_prefix()

    sentinels = [place(name) for name in ("redis", "redis2", "gw")]
    args = ("--protected-mode", "no")
    return ReplicatedRedis.on(place("redis"), [place("redis2")], sentinels, args=args)


def one_round(net: netns.Network, logs: Path, lease_ttl_s: float) -> float:
    """Seconds from the primary's SIGKILL to the first token on the promoted replica."""
    ha = replicated(net).start()
    env = {"GENQ_REDIS_URL": ha.url, "GENQ_CACHE_DIR": str(logs / "cache")}
    env |= {"GENQ_LEASE_TTL_S": str(lease_ttl_s), "GENQ_REAP_INTERVAL_S": "0.2"}
    env |= {"GENQ_METRICS_PORT": "0", "GENQ_RELAY_METRICS_PORT": "0"}
    procs = [
        Relay(env=env, log=logs / "relay.log", prefix=net["gw"].exec_prefix()),
        Worker(env=env, log=logs / "w1.log", args=("--models", "tiny"), name="w1",
               prefix=net["w1"].exec_prefix()),
    ]  # fmt: skip
    try:
        for proc in procs:
            proc.start()
        with Client(settings_for(env)) as client:
            job = client.submit(**LONG)
            wait_for(lambda: tokens(client, job.job_id) >= 5, 60, "tokens to flow")
            ha.primary.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            killed_at = time.monotonic()
            replica = ha.replicas[0]
            with Client(settings_for({**env, "GENQ_REDIS_URL": replica.url})) as on_replica:
                kept = tokens(on_replica, job.job_id)  # what survives: the replica's copy
            deadline = killed_at + 120
            while reachable_tokens(client, job.job_id) <= kept:
                if time.monotonic() > deadline:
                    raise TimeoutError("no token on the new primary within 120 s")
                time.sleep(POLL_S)
            took = time.monotonic() - killed_at
            job.cancel()
            return took
    finally:
        for proc in reversed(procs):
            proc.stop()
        ha.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--lease-ttl-s", type=float, default=LEASE_TTL_S)
    args = parser.parse_args()
    logs = netns.figure_logs("ops.failover")
    netns.clean_leftovers()
    net = netns.Network.create(HOSTS)
    try:
        times = [one_round(net, logs, args.lease_ttl_s) for _ in range(args.rounds)]
    finally:
        net.remove()
    print("SIGKILL of the primary to first token on the new primary (s):",
          " ".join(f"{t:.2f}" for t in times))  # fmt: skip
    print(f"median {statistics.median(times):.2f} s over {len(times)} rounds, lease TTL "
          f"{args.lease_ttl_s:g} s, Sentinel down-after {DOWN_AFTER_MS} ms")  # fmt: skip
    print(f"logs: {logs}")


if __name__ == "__main__":
    main()
