"""Hosts on one machine: Linux network namespaces on a bridge, for genq's multi-host tier
(tests/hosts) and the partition benchmark (ops/partition.py).

Each host is a namespace with one veth pair: its end (`eth0`) inside the namespace with an
address from the benchmarking range 198.18.0.0/15, the other end on a bridge in the root
namespace, which also holds an address so that the process that made the network (a test, a
benchmark) reaches every host. Nothing is routed beyond the bridge: traffic goes only to
these hosts and loopback. A host is cut off by setting its bridge end down, as a pulled cable.

Everything made is named `gq<pid>…` (the pid of the process that made it, six hex digits),
so that what a killed run left behind is recognised, and removed by the next one
(`clean_leftovers`), while another live run's network is left alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ops.processes import DEAD_STATES, has_proc, proc_stat

PREFIX = "gq"
OWNED = re.compile(rf"^{PREFIX}([0-9a-f]{{6}})")
RANGE = "198.18"  # 198.18.0.0/15, for benchmarking (RFC 2544); one /24 of it per network
PREFIX_LEN = 24
IP_TIMEOUT_S = 10.0


class NetnsError(RuntimeError):
    """An `ip` command failed; the message has its output."""


def ip(*args: str, check: bool = True) -> str:
    """`ip args…`; its stdout. NetnsError with its stderr when it fails and `check`."""
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
    )
    if check and done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def unavailable() -> str | None:
    """Why hosts cannot be made here (not root, no `ip`, namespaces refused), or None."""
    if os.geteuid() != 0:
        return "network namespaces (ip netns) need root"
    if shutil.which("ip") is None:
        return "no `ip` command (Debian: apt-get install iproute2)"
    probe = f"{PREFIX}{os.getpid():06x}probe"
    try:
        ip("netns", "add", probe)
    except (NetnsError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a network namespace: {exc}"
    ip("netns", "del", probe, check=False)
    return None


def figure_logs(program: str) -> Path:
    """A fresh directory for the logs of a figure measured on hosts (ops.partition …); exits
    with one line naming `program` and the reason where hosts cannot be made here."""
    reason = unavailable()
    if reason is not None:
        raise SystemExit(f"{program}: {reason}")
    return Path(tempfile.mkdtemp(prefix=f"genq-{program.rpartition('.')[2]}-"))


@dataclass(frozen=True)
class Host:
    """One namespace and its link to the bridge."""

    name: str  # redis, gw, w1…
    netns: str
    link: str  # the veth end on the bridge, in the root namespace
    address: str

    def exec_prefix(self) -> tuple[str, ...]:
        """What runs a command on this host: `ip netns exec <ns>` (it execs the command, so
        the pid and the process group stay those of the command)."""
        return ("ip", "netns", "exec", self.netns)

    def cut(self) -> None:
        """Off the network, as a pulled cable: its packets are dropped, its sockets stay."""
        ip("link", "set", self.link, "down")

    def restore(self) -> None:
        ip("link", "set", self.link, "up")

    def run(self, *argv: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
        command = [*self.exec_prefix(), *argv]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )


@dataclass
class Network:
    """A bridge and hosts on it; `remove` undoes all of it."""

    tag: str  # gq<pid>
    subnet: str  # 198.18.N
    bridge: str
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def gateway_address(self) -> str:
        """The root namespace's address on the bridge."""
        return f"{self.subnet}.1"

    @classmethod
    def create(cls, names: Sequence[str], owner_pid: int | None = None) -> Network:
        """The hosts `names` on a new bridge, named after `owner_pid` (default: this process):
        the network is another run's leftover, to `clean_leftovers`, once that pid has gone."""
        tag = f"{PREFIX}{owner_pid or os.getpid():06x}"
        subnet = free_subnet()
        network = cls(tag, subnet, f"{tag}br")
        try:
            network._make_bridge()
            for number, name in enumerate(names, start=2):
                network.hosts[name] = network._make_host(name, f"{subnet}.{number}")
        except BaseException:
            network.remove()
            raise
        return network

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def _make_bridge(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0")
        ip("addr", "add", f"{self.gateway_address}/{PREFIX_LEN}", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def _make_host(self, name: str, address: str) -> Host:
        host = Host(name, f"{self.tag}-{name}", f"{self.tag}{name}"[:15], address)
        ip("netns", "add", host.netns)
        peer = f"{host.link[:13]}p"
        ip("link", "add", host.link, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", host.netns)
        inside = ("-n", host.netns)
        ip(*inside, "link", "set", peer, "name", "eth0")
        ip(*inside, "addr", "add", f"{address}/{PREFIX_LEN}", "dev", "eth0")
        ip(*inside, "link", "set", "eth0", "up")
        ip(*inside, "link", "set", "lo", "up")
        ip("link", "set", host.link, "master", self.bridge)
        ip("link", "set", host.link, "up")
        return host

    def remove(self) -> None:
        """Every namespace (and so its veth pair) and the bridge; what is gone already is
        skipped. Processes still in a namespace are the caller's to stop first."""
        remove_owned(self.tag)


def free_subnet() -> str:
    """A 198.18.N not yet on any link here (another run's network, say)."""
    used = set(re.findall(rf"inet {re.escape(RANGE)}\.(\d+)\.", ip("-4", "-o", "addr")))
    for third in range(10, 250):
        if str(third) not in used:
            return f"{RANGE}.{third}"
    raise NetnsError(f"no free /{PREFIX_LEN} left in {RANGE}.0.0/15")


def owned_netns() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list").splitlines() if OWNED.match(line)]


def owned_links() -> list[str]:
    names = (line.split(":")[1].strip().split("@")[0] for line in ip("-o", "link").splitlines())
    return [name for name in names if OWNED.match(name)]


def remove_owned(tag: str) -> None:
    """Every namespace and link whose name starts with `tag`."""
    for netns in owned_netns():
        if netns.startswith(tag):
            ip("netns", "del", netns, check=False)
    for link in owned_links():
        if link.startswith(tag):
            ip("link", "del", link, check=False)


def clean_leftovers() -> list[str]:
    """Remove what runs that are no longer alive left (a killed test session), with the
    processes still inside their namespaces; the tags removed."""
    dead = sorted({tag for tag in _tags(owned_netns() + owned_links()) if not _alive(tag)})
    for tag in dead:
        for netns in owned_netns():
            if netns.startswith(tag):
                _kill_inside(netns)
        remove_owned(tag)
    return dead


def _tags(names: Iterable[str]) -> set[str]:
    return {match.group(0) for name in names if (match := OWNED.match(name))}


def _alive(tag: str) -> bool:
    """The run that made `tag` still runs. A killed one that nobody has reaped yet (a zombie:
    its parent gone, and init slow or not reaping) has not."""
    pid = int(tag.removeprefix(PREFIX), 16)
    if has_proc():
        stat = proc_stat(pid)
        return stat is not None and stat.state not in DEAD_STATES
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_inside(netns: str) -> None:
    """SIGKILL the processes a killed run left in its namespace, by pid."""
    for pid in ip("netns", "pids", netns, check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
