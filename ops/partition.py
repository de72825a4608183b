"""The partition figure: from cutting a worker host off the network to the first token of its
job on the other worker host, median of ROUNDS (issue 24's target: at most the lease TTL
plus one second).

    sudo .venv/bin/python -m ops.partition [--rounds 5] [--lease-ttl-s 2]

Hosts as in the hosts tier (ops/netns.py): `redis`, `gw` (the relay), `w1` and `w2`, each
serving the tiny model. Each round submits a long job, cuts off the host that runs it, times
the first token frame of the next epoch in the job's stream, brings the host back and
cancels the job. Needs root and `ip`; everything it made is removed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from genq import Client
from genq.common.frames import FrameType
from genq.common.store import run, streams
from ops import netns
from ops.localstack import RedisServer, Relay, Worker, settings_for, wait_for

ROUNDS = 5
LONG: dict[str, Any] = {
    "prompt": "partition",
    "max_tokens": 1_000_000,
    "ignore_eos": True,
    "seed": 1,
}
POLL_S = 0.005  # how finely the first token is timed
TOKEN = f'"type":"{FrameType.TOKEN}"'  # as a token frame is written (pydantic JSON)


def first_token_after(client: Client, job_id: str, epoch: int) -> bool:
    """Whether the job's stream has a token frame of an epoch past `epoch`."""
    for entry_id, frame in run(client.redis, streams.raw_frames(client.keys, job_id)):
        if int(entry_id.split("-")[0]) > epoch and TOKEN in frame:
            return True
    return False


def one_round(client: Client, net: netns.Network) -> float:
    """Seconds from the cut to the first token on the other host."""
    job = client.submit(**LONG)
    wait_for(lambda: client.record(job.job_id).worker != "", 60, "the job to start")
    record = client.record(job.job_id)
    host = net[record.worker.partition("@")[0]]
    wait_for(lambda: first_token_after(client, job.job_id, record.epoch - 1), 60, "a token")
    host.cut()
    cut_at = time.monotonic()
    try:
        deadline = cut_at + 60
        while not first_token_after(client, job.job_id, record.epoch):
            if time.monotonic() > deadline:
                raise TimeoutError("no token on the other host within 60 s")
            time.sleep(POLL_S)
        return time.monotonic() - cut_at
    finally:
        host.restore()
        job.cancel()


def measure(rounds: int, lease_ttl_s: float, logs: Path) -> list[float]:
    netns.clean_leftovers()
    net = netns.Network.create(("redis", "gw", "w1", "w2"))
    procs: list[Relay | Worker] = []
    redis_host = net["redis"]
    server = RedisServer(
        host=redis_host.address, prefix=redis_host.exec_prefix(), args=("--protected-mode", "no")
    )
    try:
        server.start()
        env = {"GENQ_REDIS_URL": server.url, "GENQ_LEASE_TTL_S": str(lease_ttl_s)}
        env |= {"GENQ_REAP_INTERVAL_S": "0.2", "GENQ_METRICS_PORT": "0"}
        env |= {"GENQ_RELAY_METRICS_PORT": "0", "GENQ_CACHE_DIR": str(logs / "cache")}
        procs.append(Relay(env=env, log=logs / "relay.log", prefix=net["gw"].exec_prefix()))
        for name in ("w1", "w2"):
            prefix = net[name].exec_prefix()
            args = ("--models", "tiny")
            procs.append(
                Worker(env=env, log=logs / f"{name}.log", args=args, name=name, prefix=prefix)
            )
        for proc in procs:
            proc.start()
        with Client(settings_for(env)) as client:
            return [one_round(client, net) for _ in range(rounds)]
    finally:
        for proc in reversed(procs):
            proc.stop()
        server.stop()
        net.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--lease-ttl-s", type=float, default=2.0)
    args = parser.parse_args()
    logs = netns.figure_logs("ops.partition")
    times = measure(args.rounds, args.lease_ttl_s, logs)
    median = statistics.median(times)
    target = args.lease_ttl_s + 1.0
    print("cut to first token on the other host (s):", " ".join(f"{t:.2f}" for t in times))
    verdict = "within" if median <= target else "OVER"
    print(f"median {median:.2f} s ({verdict} the target: lease TTL + 1 s = {target:.1f} s)")
    print(f"logs: {logs}")


if __name__ == "__main__":
    main()
