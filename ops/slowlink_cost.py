"""The slow link's cost: first-token latency and tok/s of a worker host on a clean link to
Redis, then of one behind the slow link (50 ms each way, 1% loss; ops/slowlink.py), and
their ratios.

    sudo .venv/bin/python -m ops.slowlink_cost [--jobs 20] [--max-tokens 128]

Hosts as in the hosts tier (ops/netns.py): `redis`, `gw` (the relay), `w1` on a clean link and
`w2` behind the slow one, each serving the tiny model. The two workers run one after the other
(never side by side, so neither takes the other's CPU), and each runs its jobs one at a time:
a warm-up job, then `--jobs` measured ones. The client sits on the bridge, on a clean link.
First token is from submit to the first token chunk the client read; tok/s is the decode rate
after it (producer StreamStats). Needs root and `ip`; everything it made is removed at the end.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genq import Client
from genq.producer.core import StreamStats
from ops import netns
from ops.localstack import RedisServer, Relay, Worker, settings_for
from ops.slowlink import slow_link

JOBS = 20
MAX_TOKENS = 128
TINY = ("--models", "tiny")


@dataclass
class Figures:
    """Medians over a configuration's jobs."""

    first_token_s: float
    tokens_per_s: float

    @classmethod
    def of(cls, stats: list[StreamStats]) -> Figures:
        first = [s.first_token_s for s in stats if s.first_token_s is not None]
        return cls(statistics.median(first), statistics.median(s.tokens_per_s for s in stats))


def one_job(client: Client, index: int, max_tokens: int) -> StreamStats:
    """A job's stream statistics, read from its submit to its last frame."""
    spec: dict[str, Any] = {"max_tokens": max_tokens, "ignore_eos": True, "seed": index}
    job = client.submit(f"slow link cost {index}", **spec)
    with job.stream(timeout=300) as stream:
        for _ in stream:
            pass
    job.result(timeout=60)  # the job succeeded: a failure raises here
    return job.stats


def run_jobs(client: Client, jobs: int, max_tokens: int) -> Figures:
    one_job(client, 0, max_tokens)  # warm-up: the model loaded, connections made
    return Figures.of([one_job(client, i, max_tokens) for i in range(1, jobs + 1)])


def measure(jobs: int, max_tokens: int, logs: Path) -> tuple[Figures, Figures, str]:
    """Clean and slow figures, and how the link was made slow."""
    netns.clean_leftovers()
    net = netns.Network.create(("redis", "gw", "w1", "w2"))
    redis_host = net["redis"]
    args = ("--protected-mode", "no")
    server = RedisServer(host=redis_host.address, prefix=redis_host.exec_prefix(), args=args)
    relay: Relay | None = None
    try:
        server.start()
        env = {"GENQ_REDIS_URL": server.url, "GENQ_CACHE_DIR": str(logs / "cache")}
        env |= {"GENQ_METRICS_PORT": "0", "GENQ_RELAY_METRICS_PORT": "0"}
        relay = Relay(env=env, log=logs / "relay.log", prefix=net["gw"].exec_prefix())
        relay.start()

        def on(name: str, url: str, body: Callable[[], Figures]) -> Figures:
            worker_env = env | {"GENQ_REDIS_URL": url}
            log, prefix = logs / f"{name}.log", net[name].exec_prefix()
            worker = Worker(env=worker_env, log=log, args=TINY, name=name, prefix=prefix)
            worker.start()
            try:
                return body()
            finally:
                worker.stop()

        with Client(settings_for(env)) as client:
            clean = on("w1", server.url, lambda: run_jobs(client, jobs, max_tokens))
            link = slow_link(net, "w2", server.host, server.port)
            try:
                url = link.url_for(server.url)
                slow = on("w2", url, lambda: run_jobs(client, jobs, max_tokens))
            finally:
                link.remove()
            return clean, slow, link.summary()
    finally:
        if relay is not None:
            relay.stop()
        server.stop()
        net.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=JOBS)
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
    args = parser.parse_args()
    logs = netns.figure_logs("ops.slowlink_cost")
    clean, slow, how = measure(args.jobs, args.max_tokens, logs)
    print(f"{args.jobs} jobs per link, {args.max_tokens} tokens each, one at a time; slow: {how}")
    print(f"{'link':<6} {'first token (ms, median)':>26} {'tok/s (median)':>16}")
    for name, figures in (("clean", clean), ("slow", slow)):
        print(f"{name:<6} {figures.first_token_s * 1000:>26.0f} {figures.tokens_per_s:>16.1f}")
    first_ratio = slow.first_token_s / clean.first_token_s
    rate_ratio = slow.tokens_per_s / clean.tokens_per_s
    print(f"slow / clean: first token x{first_ratio:.3g}, tok/s x{rate_ratio:.3g}")
    print(f"logs: {logs}")


if __name__ == "__main__":
    main()
