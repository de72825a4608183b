"""The scale curve: where one Redis saturates, and which part of genq saturates first.

Hosts are network namespaces on one bridge (ops/netns.py): `redis` runs redis-server, `gw`
the relay (or two relays sharing the work, GENQ_RELAY_SHARD 1/2 and 2/2), and w1..w4 the
worker processes of the tiny model, dealt round-robin: one `genq worker --models tiny -c k`
per host, k its share of the processes. Every configuration gets a fresh set of genq
processes and an empty Redis. The benchmark's process, on the bridge, submits N short jobs
as one batch and waits for it, then reads every job's record through the store.

What a configuration prints, over the run (submit to the batch's end):
- jobs/s end to end, and the relays' frames/s (their `genq_relay_frames_total`);
- Redis CPU (INFO cpu: used_cpu_user + used_cpu_sys) per 1,000 frames moved;
- Redis commands per job (INFO commandstats: every call, those run inside genq's scripts
  included) and the broker's share of them (BROKER, below);
- queue wait (a record's submitted_ms to started_ms), p50 and p99: with the whole batch
  submitted at once it is mostly the backlog ahead of the job;
- CPU by role as a share of the wall time (psutil: Redis, the busiest relay, the workers'
  process trees, this producer), each over what it can use: one core for Redis and for a
  relay (one thread each), the worker processes or the machine's cores, whichever is fewer.
  The part nearest its ceiling is the one that saturates.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

from genq import Client, JobSpec, Settings
from genq.common.registry import ModelRegistry
from ops import netns
from ops.bench.batches import batch_lines
from ops.bench.relay import relay_frames
from ops.bench.report import MS_PER_S, TINY, percentile, say, table
from ops.bench.stack import cpu_s, print_tail
from ops.localstack import RedisServer, Relay, Worker, settings_for

WORKER_HOSTS = ("w1", "w2", "w3", "w4")
HOSTS = ("redis", "gw", *WORKER_HOSTS)
WORKERS = (1, 2, 4, 8, 16)  # worker processes per configuration, unless --scale-workers
RELAYS = (1, 2)
JOBS = 10_000
TOKENS = 8  # a short job, unless --scale-tokens
RELAY_PORT = 9541  # relay k's metrics port is RELAY_PORT + k - 1, on `gw`
WAIT_TIMEOUT_S = 3600.0
SETTLE_S, SETTLE_TIMEOUT_S = 0.5, 30.0  # the relays' frames unchanged for SETTLE_S: caught up
FLAT = 1.1  # more workers that raise jobs/s by less than this factor: saturated
# Commands only kombu's Redis transport sends here (genq's store never does): its queues
# (LPUSH, BRPOP, RPOP), its unacked bookkeeping's MULTI/EXEC and HDEL, restoring unacked
# messages (ZREVRANGEBYSCORE) and its exchange bindings (SMEMBERS). Kombu's unacked
# index and hash take a ZADD and an HSET per delivery and a ZREM beside each HDEL, counted as
# many as the HDELs; its task-event PUBLISHes are those left when the frames and FINISH's
# announcement of each job's end on its batch's channel are taken away.
BROKER = ("lpush", "brpop", "rpop", "multi", "exec", "hdel", "zrevrangebyscore", "smembers")
BOOKKEEPING = ("zadd", "hset", "zrem")
COMPONENTS = ("redis", "relay", "workers")


def worker_counts(text: str) -> list[int]:
    """`--scale-workers`/`--scale-relays`: comma-separated positive counts."""
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"comma-separated positive counts, not {text!r}")
    return counts


@dataclass(frozen=True)
class Snapshot:
    """Counters at one moment of a run."""

    at: float
    redis_cpu_s: float
    commands: Mapping[str, int]
    frames: Sequence[float]  # per relay
    cpu: Mapping[str, Sequence[float]]  # CPU seconds per role, per process of it
    machine: Any  # psutil.cpu_times()


@dataclass(frozen=True)
class Row:
    relays: int
    workers: int
    jobs: int
    succeeded: int
    seconds: float
    frames: Sequence[float]
    redis_cpu_s: float
    commands: Mapping[str, int]
    waits_s: Sequence[float]
    load: Mapping[str, float]  # role: share of its ceiling
    cpu_s: Mapping[str, float]  # role: CPU seconds, all its processes
    machine_busy: float
    submit_s: float  # the submit_batch call

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds

    @property
    def broker_commands(self) -> float:
        c = self.commands
        own = sum(c.get(name, 0) for name in BROKER) + len(BOOKKEEPING) * c.get("hdel", 0)
        return own + max(c.get("publish", 0) - sum(self.frames) - self.jobs, 0)

    @property
    def busiest(self) -> str:
        """The component nearest its ceiling (the producer, the benchmark's, left out)."""
        return max(COMPONENTS, key=lambda role: self.load[role])

    def per_core(self, role: str, count: float) -> float:
        """`count` per CPU second of `role`: what one core of it carries per second."""
        return count / self.cpu_s[role] if self.cpu_s[role] else float("inf")


@dataclass
class Topology:
    """The network, its Redis, and the genq processes of the configuration running now."""

    net: netns.Network
    server: RedisServer
    control: redis.Redis  # the benchmark's own connection: INFO, FLUSHALL
    env: dict[str, str]
    logs: Path
    relays: list[Relay] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)

    def relay_url(self, k: int) -> str:
        return f"http://{self.net['gw'].address}:{RELAY_PORT + k}/metrics"

    def start(self, relays: int, workers: int) -> None:
        self.control.flushall()
        for k in range(relays):
            env = {**self.env, "GENQ_RELAY_SHARD": f"{k + 1}/{relays}"}
            env["GENQ_RELAY_METRICS_PORT"] = str(RELAY_PORT + k)
            log, prefix = self.logs / f"scale-relay{k + 1}.log", self.net["gw"].exec_prefix()
            self.relays.append(Relay(env, log, prefix=prefix).spawn())
        for host, count in spread(workers):
            args = ("--models", TINY, "-c", str(count))
            log, prefix = self.logs / f"scale-worker-{host}.log", self.net[host].exec_prefix()
            self.workers.append(Worker(self.env, log, prefix=prefix, args=args, name=host).spawn())
        for proc in [*self.relays, *self.workers]:
            proc.wait_ready()

    def stop(self) -> None:
        for proc in [*self.workers, *self.relays]:
            proc.stop()
        self.workers, self.relays = [], []


def spread(workers: int) -> list[tuple[str, int]]:
    """Worker processes dealt round-robin over the worker hosts: (host, processes)."""
    hosts = WORKER_HOSTS[: min(workers, len(WORKER_HOSTS))]
    return [
        (host, workers // len(hosts) + (n < workers % len(hosts))) for n, host in enumerate(hosts)
    ]


def section(args: argparse.Namespace, cache: Path) -> None:
    """One Redis on a host of its own, the relay on another, 1 to 16 worker processes of the
    tiny model over four worker hosts (network namespaces); 10,000 short jobs as one batch:
    jobs/s, relay frames/s, Redis CPU per 1,000 frames, commands per job, queue wait, and
    which part saturates first. Then again with two sharded relays. Needs root."""
    reason = netns.unavailable()
    if reason is not None:
        say(f"  skipped: {reason}")
        return
    cores, counts = len(os.sched_getaffinity(0)), (args.scale_workers, args.scale_relays)
    workers, relays = (", ".join(map(str, each)) for each in counts)
    say(
        f"{args.scale_jobs:,} jobs of {args.scale_tokens} tokens on {TINY!r} as one batch "
        f"(bundled as a batch is by default), worker processes {workers} over "
        f"{', '.join(WORKER_HOSTS)}, relays {relays}; every host shares this machine's {cores} "
        "cores; per run: the table, then each run's checks, CPU cost and commands per job"
    )
    with topology(cache) as topo:
        for relays in args.scale_relays:
            rows = [measure(topo, relays, workers, args) for workers in args.scale_workers]
            report(rows)


@contextmanager
def topology(cache: Path) -> Iterator[Topology]:
    netns.clean_leftovers()
    net = netns.Network.create(HOSTS)
    host = net["redis"]
    server = RedisServer(
        host=host.address, prefix=host.exec_prefix(), args=("--protected-mode", "no")
    )
    env = {
        "GENQ_REDIS_URL": server.url,
        "GENQ_CACHE_DIR": str(Settings().cache_dir),
        "GENQ_METRICS_PORT": "0",
    }
    ModelRegistry.from_settings(settings_for(env)).local_path(TINY)  # written before workers race
    control = redis.Redis.from_url(server.url, decode_responses=True)
    topo = Topology(net, server, control, env, cache)
    with ExitStack() as undo:
        undo.callback(net.remove)
        undo.callback(server.stop)
        server.start()
        undo.callback(control.close)
        undo.callback(topo.stop)
        yield topo


def measure(topo: Topology, relays: int, workers: int, args: argparse.Namespace) -> Row:
    topo.start(relays, workers)
    try:
        with Client(settings_for(topo.env)) as client:
            warm_up(client, workers)
            lines = batch_lines(TINY, args.scale_jobs, args.scale_tokens, 0, "Story {n}:")
            before = snapshot(topo)
            handle = client.submit_batch(lines)
            submitted = time.monotonic()
            status = handle.wait(timeout=WAIT_TIMEOUT_S)
            after = dataclasses.replace(snapshot(topo), frames=settled_frames(topo))
            records = [client.record(job) for job in handle.job_ids()]  # as a user reads them
    except Exception:
        for proc in [*topo.relays, *topo.workers]:
            print_tail(proc.log)
        raise
    finally:
        topo.stop()
    waits = [(r.started_ms - r.submitted_ms) / MS_PER_S for r in records if r.started_ms]
    more = {"jobs": len(records), "succeeded": status.succeeded, "waits_s": waits}
    return row(relays, workers, before, after, **more, submit_s=submitted - before.at)


def warm_up(client: Client, workers: int) -> None:
    """A few lone jobs, so that the worker processes have loaded the model."""
    warm = JobSpec(prompt="warm", model=TINY, max_tokens=TOKENS)
    handles = [client.submit(warm.model_copy(update={"seed": n})) for n in range(workers * 2)]
    for handle in handles:
        handle.result(timeout=WAIT_TIMEOUT_S)


def snapshot(topo: Topology) -> Snapshot:
    control = topo.control
    cpu, stats = control.info("cpu"), control.info("commandstats")
    redis_pid = topo.server.proc.pid if topo.server.proc else 0
    roles = {
        "redis": [redis_pid],
        "relay": [relay.proc.pid for relay in topo.relays if relay.proc],
        "workers": [w.proc.pid for w in topo.workers if w.proc],
    }
    return Snapshot(
        at=time.monotonic(),
        redis_cpu_s=float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        commands={name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()},
        frames=[relay_frames(topo.relay_url(k)) for k in range(len(topo.relays))],
        cpu={role: [tree_cpu_s(pid) for pid in pids] for role, pids in roles.items()}
        | {"producer": [cpu_s(psutil.Process())]},  # itself: the others are its children
        machine=psutil.cpu_times(),
    )


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its children (a worker's pool); 0 when it is gone."""
    try:
        root = psutil.Process(pid)
        return sum(map(cpu_s, [root, *root.children(recursive=True)]))
    except psutil.NoSuchProcess:
        return 0.0


def settled_frames(topo: Topology) -> list[int]:
    """Each relay's frames once they stop moving: the batch's last frames may still be on
    their way when it ends (the relays run behind under load)."""
    counts: list[int] = []
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        now = [relay_frames(topo.relay_url(k)) for k in range(len(topo.relays))]
        if now == counts:
            break
        counts = now
        time.sleep(SETTLE_S)
    return counts


def row(relays: int, workers: int, before: Snapshot, after: Snapshot, **more: Any) -> Row:
    """The run between two snapshots; `more`: its jobs, succeeded, waits and submit_s."""
    seconds = after.at - before.at
    commands = {n: c - before.commands.get(n, 0) for n, c in after.commands.items()}
    used = {
        role: [a - b for a, b in zip(after.cpu[role], before.cpu[role], strict=True)]
        for role in after.cpu
    }
    ceiling = {"workers": min(workers, len(os.sched_getaffinity(0)))}  # 1 core for the others
    load = {
        r: (max(u) if r == "relay" else sum(u)) / seconds / ceiling.get(r, 1)
        for r, u in used.items()
    }
    return Row(
        relays=relays,
        workers=workers,
        seconds=seconds,
        frames=[a - b for a, b in zip(after.frames, before.frames, strict=True)],
        redis_cpu_s=after.redis_cpu_s - before.redis_cpu_s,
        commands={n: c for n, c in commands.items() if c},
        load=load,
        cpu_s={role: sum(spent) for role, spent in used.items()},
        machine_busy=busy_share(before.machine, after.machine),
        **more,
    )


def busy_share(before: Any, after: Any) -> float:
    """The machine's cores busy over the run, as a share of all of them."""
    spent = sum(after) - sum(before)
    idle = (after.idle + getattr(after, "iowait", 0)) - (before.idle + getattr(before, "iowait", 0))
    return 1 - idle / spent if spent else 0.0


def report(rows: Sequence[Row]) -> None:
    header = ("relays x workers", "jobs/s", "frames/s", "Redis ms/1k frames", "cmds/job",
              "broker/job", "wait p50 s", "p99 s", "CPU redis/relay/workers", "machine",
              "nearest ceiling")  # fmt: skip
    say("", table(header, [cells(r) for r in rows]), "")
    for r in rows:  # the run's checks, what a core of each part carries, commands per job
        top = sorted(r.commands.items(), key=lambda item: -item[1])[:10]
        say(
            f"  {r.relays} x {r.workers}: {r.succeeded:,}/{r.jobs:,} succeeded in "
            f"{r.seconds:.1f} s (submit_batch {r.submit_s:.1f} s, producer CPU "
            f"{r.load['producer']:.0%}); frames {' + '.join(f'{f:,.0f}' for f in r.frames)}",
            f"    per CPU-second: Redis {r.per_core('redis', r.jobs):,.0f} jobs, relays "
            f"{r.per_core('relay', sum(r.frames)):,.0f} frames, workers "
            f"{r.per_core('workers', r.jobs):,.0f} jobs",
            "    commands per job: "
            + ", ".join(f"{name} {calls / r.jobs:.2f}" for name, calls in top),
        )
    say(saturation(rows))


def cells(r: Row) -> list[str]:
    frames = sum(r.frames)
    return [
        f"{r.relays} x {r.workers}",
        f"{r.jobs_per_s:,.0f}",
        f"{frames / r.seconds:,.0f}",
        f"{r.redis_cpu_s * MS_PER_S / (frames / 1000):.1f}" if frames else "-",
        f"{sum(r.commands.values()) / r.jobs:.1f}",
        f"{r.broker_commands / r.jobs:.2f}",
        *(f"{percentile(r.waits_s, pct):.1f}" if r.waits_s else "-" for pct in (50, 99)),
        "/".join(f"{r.load[role]:.0%}" for role in ("redis", "relay", "workers")),
        f"{r.machine_busy:.0%}",
        r.busiest,
    ]


def saturation(rows: Sequence[Row]) -> str:
    """The first worker count past which more workers stop raising jobs/s."""
    for prev, cur in itertools.pairwise(rows):
        if cur.jobs_per_s < prev.jobs_per_s * FLAT:
            return (
                f"saturation: {prev.workers} -> {cur.workers} workers raised jobs/s by "
                f"{cur.jobs_per_s / prev.jobs_per_s:.2f}x (under {FLAT}x): saturated at "
                f"{prev.workers} worker processes, {prev.jobs_per_s:,.0f} jobs/s; nearest its "
                f"ceiling there: {prev.busiest} ({prev.load[prev.busiest]:.0%}), with the "
                f"machine's cores {cur.machine_busy:.0%} busy"
            )
    last = rows[-1]
    return (
        f"saturation: not reached by {last.workers} workers ({last.jobs_per_s:,.0f} jobs/s); "
        f"nearest its ceiling: {last.busiest} ({last.load[last.busiest]:.0%}), with the "
        f"machine's cores {last.machine_busy:.0%} busy"
    )
