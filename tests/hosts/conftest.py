"""Hosts tier: genq across hosts that are Linux network namespaces on one bridge
(ops/netns.py): `redis`, `redis2` (a replica, for Sentinel failover), `gw` (the relay and the
gateway), `w1`, `w2` and `client`.

Every genq process runs inside its host's namespace and reaches Redis over real TCP at the
`redis` host's address; the test process itself sits on the bridge (the root namespace) and
reaches every host, so that its own reads are never the ones a test cuts off.

The tier needs root, `ip` and network namespaces; where any is missing, all of it is skipped
with the reason. The network is removed at the end of the session, also when a test fails,
and what a killed session left is removed at the start of the next.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from genq import Client
from genq.common.settings import Settings
from ops import netns
from ops.localstack import Gateway, GenqProcess, RedisServer, Relay, Worker, settings_for

HOSTS = ("redis", "redis2", "gw", "w1", "w2", "client")
P = TypeVar("P", bound=GenqProcess)


@pytest.fixture(scope="session")
def network() -> Iterator[netns.Network]:
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"hosts tier skipped: {reason}")
    netns.clean_leftovers()
    net = netns.Network.create(HOSTS)
    yield net
    net.remove()


@pytest.fixture(scope="session")
def redis_server(network: netns.Network) -> Iterator[RedisServer]:
    """The session's Redis, on the `redis` host."""
    host = network["redis"]
    # Not protected mode (loopback only): its clients are the other hosts, on a bridge that
    # reaches nothing beyond this machine.
    args = ("--protected-mode", "no")
    server = RedisServer(host=host.address, prefix=host.exec_prefix(), args=args).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def genq_env(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """GENQ_* variables of every host's processes and the test's own client."""
    return {
        "GENQ_REDIS_URL": redis_server.url,
        "GENQ_CACHE_DIR": str(tmp_path_factory.mktemp("genq") / "cache"),
        # Short leases, so that a cut-off worker's jobs resume elsewhere within seconds.
        "GENQ_LEASE_TTL_S": "2",
        "GENQ_REAP_INTERVAL_S": "0.2",
        "GENQ_METRICS_PORT": "0",
        "GENQ_RELAY_METRICS_PORT": "0",
    }


@pytest.fixture(scope="session")
def databases() -> Iterator[int]:
    return itertools.count(1)


@dataclass
class HostStack:
    """A test's own genq processes, each on its host, on a Redis database of its own (so its
    own broker queues); all stopped at the end of the test."""

    network: netns.Network
    env: dict[str, str]
    logs: Path
    procs: list[GenqProcess] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return settings_for(self.env)

    def client(self) -> Client:
        """The test's own client, on the bridge (never cut off)."""
        return Client(self.settings)

    def worker(self, host: str, *args: str, **env: str) -> Worker:
        """`genq worker` named after its host, given `args` (e.g. --slots 8)."""
        proc = Worker(env={**self.env, **env}, log=self.logs / f"{host}.log", args=args, name=host)
        return self._start(proc, host)

    def relay(self, host: str = "gw") -> Relay:
        return self._start(Relay(env=self.env, log=self.logs / f"relay-{host}.log"), host)

    def gateway(self, host: str = "gw", **env: str) -> Gateway:
        address = self.network[host].address
        proc = Gateway(env={**self.env, **env}, log=self.logs / f"gateway-{host}.log", host=address)
        return self._start(proc, host)

    def _start(self, proc: P, host: str) -> P:
        proc.prefix = self.network[host].exec_prefix()
        self.procs.append(proc)
        return proc.start()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture
def stack(
    network: netns.Network, genq_env: dict[str, str], databases: Iterator[int], tmp_path: Path
) -> Iterator[HostStack]:
    """A stack of the test's own; every host is back on the network when it ends."""
    url = genq_env["GENQ_REDIS_URL"].rsplit("/", 1)[0] + f"/{next(databases)}"
    made = HostStack(network, {**genq_env, "GENQ_REDIS_URL": url}, tmp_path)
    try:
        yield made
    finally:
        made.stop()
        for host in network.hosts.values():
            host.restore()


NOTES: list[str] = []  # how the tier ran here (netem or its proxy), shown after the run


def note(line: str) -> None:
    NOTES.append(line)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if NOTES:
        terminalreporter.section("hosts tier")
        for line in NOTES:
            terminalreporter.write_line(line)
