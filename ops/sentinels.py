"""A replicated Redis for tests and ops: a primary, its replicas and Sentinels that watch
them and promote a replica when the primary dies (Redis's own failover: `redis-server
--sentinel`). Each part is a process on its host's address, started like
ops.localstack.RedisServer (`prefix` runs it in a namespace host: ops/netns.py).

    ha = ReplicatedRedis.on(primary=("127.0.0.1", ()), replicas=[("127.0.0.1", ())],
                            sentinels=[("127.0.0.1", ())] * 3).start()
    ha.url   # redis+sentinel://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/genq/0
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from ops.localstack import (
    READY_TIMEOUT_S,
    RedisServer,
    StackError,
    free_port,
    stop_process,
    wait_for,
)

PRIMARY_NAME = "genq"
# A primary unanswering this long is down for a Sentinel; a quorum of them then fails over.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
Place = tuple[str, Sequence[str]]  # a host's address and what runs a command there


@dataclass
class SentinelServer:
    """`redis-server --sentinel` on `host:port`, monitoring the primary at `watched`."""

    watched: tuple[str, int]
    host: str = "127.0.0.1"
    prefix: Sequence[str] = ()
    port: int = field(default_factory=free_port)
    quorum: int = 2
    password: str | None = None  # the primary's (and replicas'), for `sentinel auth-pass`
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="genq-sentinel-")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "sentinel.log"

    def config(self) -> str:
        host, port = self.watched
        lines = [
            f"port {self.port}",
            f"bind {self.host}",
            f"dir {self.workdir}",
            f"logfile {self.log_path}",
            f"sentinel monitor {PRIMARY_NAME} {host} {port} {self.quorum}",
            f"sentinel down-after-milliseconds {PRIMARY_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {PRIMARY_NAME} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {PRIMARY_NAME} 1",
            "protected-mode no",  # bound to its host's address: the bridge reaches no further
        ]
        if self.password:
            lines.append(f"sentinel auth-pass {PRIMARY_NAME} {self.password}")
        return "\n".join(lines) + "\n"

    def start(self) -> SentinelServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError("redis-server not found (it runs the Sentinels too: --sentinel)")
        conf = self.workdir / "sentinel.conf"  # Sentinel rewrites it: its own copy
        conf.write_text(self.config())
        self.proc = subprocess.Popen(
            [*self.prefix, binary, str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(self._ready, READY_TIMEOUT_S, f"Sentinel on {self.host}:{self.port}")
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(self.host, self.port, socket_connect_timeout=0.5, socket_timeout=2)

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise StackError(f"Sentinel exited with {self.proc.returncode}; see {self.log_path}")
        try:
            return bool(self.client().ping())
        except redis.ConnectionError:
            return False

    def master(self) -> dict[str, Any]:
        """What this Sentinel knows of the primary (SENTINEL MASTER)."""
        state: dict[str, Any] = self.client().execute_command(  # type: ignore[no-untyped-call]
            "SENTINEL MASTER", PRIMARY_NAME
        )
        return state

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class ReplicatedRedis:
    """A primary, replicas of it and Sentinels; `url` is GENQ_REDIS_URL's Sentinel form."""

    primary: RedisServer
    replicas: list[RedisServer]
    sentinels: list[SentinelServer]

    @classmethod
    def on(
        cls,
        primary: Place,
        replicas: Sequence[Place],
        sentinels: Sequence[Place],
        password: str | None = None,
        args: Sequence[str] = (),
    ) -> ReplicatedRedis:
        """Each part on its place; `args` are more redis-server options for each server."""
        first = RedisServer(host=primary[0], prefix=primary[1], password=password, args=args)
        auth = ("--masterauth", password) if password else ()
        follow = (*args, "--replicaof", first.host, str(first.port), *auth)
        return cls(
            primary=first,
            replicas=[
                RedisServer(host=host, prefix=prefix, password=password, args=follow)
                for host, prefix in replicas
            ],
            sentinels=[
                SentinelServer(
                    (first.host, first.port),
                    host=host,
                    prefix=prefix,
                    quorum=len(sentinels) // 2 + 1,
                    password=password,
                )
                for host, prefix in sentinels
            ],
        )

    @property
    def servers(self) -> list[RedisServer]:
        return [self.primary, *self.replicas]

    @property
    def url(self) -> str:
        hosts = ",".join(f"{s.host}:{s.port}" for s in self.sentinels)
        auth = f":{self.primary.password}@" if self.primary.password else ""
        return f"redis+sentinel://{auth}{hosts}/{PRIMARY_NAME}/0"

    def start(self) -> ReplicatedRedis:
        """Every part started, each replica in sync, and every Sentinel seeing every replica
        and every other Sentinel (so that a failover can be agreed on at once)."""
        self.primary.start()
        for replica in self.replicas:
            replica.start()
        for sentinel in self.sentinels:
            sentinel.start()
        wait_for(self._watching, READY_TIMEOUT_S, "Sentinels seeing the replicas and each other")
        return self

    def _watching(self) -> bool:
        others, replicas = len(self.sentinels) - 1, len(self.replicas)
        for sentinel in self.sentinels:
            state = sentinel.master()
            if state["num-other-sentinels"] < others or state["num-slaves"] < replicas:
                return False
        return all(self._in_sync(replica) for replica in self.replicas)

    def _in_sync(self, replica: RedisServer) -> bool:
        client = redis.Redis(replica.host, replica.port, password=replica.password)
        return client.info("replication").get("master_link_status") == "up"

    def primary_address(self) -> tuple[str, int]:
        """Where the Sentinels (the first that answers) say the primary is."""
        for sentinel in self.sentinels:
            try:
                state = sentinel.master()
            except redis.ConnectionError:
                continue
            return state["ip"], int(state["port"])
        raise StackError("no Sentinel answers")

    def server_at(self, address: tuple[str, int]) -> RedisServer:
        return next(s for s in self.servers if (s.host, s.port) == address)

    def wait_failover(
        self, old: tuple[str, int], timeout_s: float = READY_TIMEOUT_S
    ) -> RedisServer:
        """The replica the Sentinels promoted once `old` was lost."""
        wait_for(lambda: self.primary_address() != old, timeout_s, "a Sentinel failover")
        return self.server_at(self.primary_address())

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.servers:
            server.stop()
