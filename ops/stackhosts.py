"""The hosts of `ops/stack up --hosts`: genq's topology on one machine standing in for several,
each host a network namespace on one bridge (ops/netns.py, 198.18.0.0/15):

    redis   redis-server
    gw      the relay, and the gateway and Flower when asked
    w1, w2  a worker each (`--workers N`: w1 … wN)

This machine sits on the bridge too (at .1), so that `genq` commands run here reach the stack's
Redis over it, as a producer on another machine would.

The network is named after a keeper, a `sleep infinity` recorded with the stack's processes:
while it runs, the network is this stack's; once it has gone (the stack crashed, or was
killed without `down`), whatever makes hosts next (`up --hosts`, the hosts tier) removes what
is left of it (netns.clean_leftovers), with any process still inside.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ops import netns
from ops.localstack import GenqProcess, RedisServer, StackError, stop_process
from ops.stackstate import NetworkRecord

REDIS_HOST = "redis"
GATEWAY_HOST = "gw"  # the relay, the gateway, Flower
DEFAULT_WORKERS = 2  # w1 and w2


def worker_host(n: int) -> str:
    return f"w{n}"


def host_names(workers: int) -> list[str]:
    return [REDIS_HOST, GATEWAY_HOST, *(worker_host(n) for n in range(1, workers + 1))]


def check_possible() -> None:
    """StackError with one line where namespaces cannot be made (not root, no `ip` ...)."""
    reason = netns.unavailable()
    if reason is not None:
        raise StackError(f"--hosts: {reason}")


@dataclass
class Keeper:
    """The process whose pid names the network: it lives as long as the stack."""

    env: Mapping[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> Keeper:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["sleep", "infinity"],
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives `up`, as the stack's other processes do
            )
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def create_network(workers: int, keeper: Keeper) -> netns.Network:
    """The hosts, named after the keeper; what was left by stacks that have gone is removed
    first. StackError if an `ip` command fails (nothing of this network is left then)."""
    assert keeper.proc is not None, "the keeper runs first"
    netns.clean_leftovers()
    try:
        return netns.Network.create(host_names(workers), owner_pid=keeper.proc.pid)
    except netns.NetnsError as exc:
        raise StackError(f"--hosts: could not make the hosts: {exc}") from exc


def record(network: netns.Network) -> NetworkRecord:
    hosts = {name: host.address for name, host in network.hosts.items()}
    return NetworkRecord(tag=network.tag, bridge=network.bridge, subnet=network.subnet, hosts=hosts)


def place(proc: GenqProcess | RedisServer, host: netns.Host) -> None:
    """Run `proc` on `host`: started by `ip netns exec`, which execs it (same pid)."""
    proc.prefix = host.exec_prefix()


def remove(network: NetworkRecord) -> None:
    """Every namespace, veth and bridge of it; its processes are stopped already."""
    netns.remove_owned(network.tag)
