"""`ops/stack up --hosts` as an operator runs it: the whole topology on namespace hosts with
one command (Redis on `redis`, the relay and Flower on `gw`, a worker on each of `w1`, `w2`),
a job submitted from this machine over the bridge, `status`, `genq workers` and Flower naming
each process's host, and a `down` (or, after a crash, the next `up`) that leaves no namespace,
veth or bridge behind.

These tests make their own network (ops/stackhosts.py), not the tier's session one."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ops import netns
from ops.localstack import wait_for
from tests.integration.support import run_genq
from tests.integration.test_stack import STACK, StackDir, ok, pids, running

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def stack_dir(tmp_path: Path) -> Iterator[StackDir]:
    """A run directory; whatever a test leaves running there is brought down afterwards."""
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"hosts tier skipped: {reason}")
    stack = StackDir(tmp_path / "stack")
    yield stack
    if (stack.path / "state.json").exists():
        stack.run("down")


def ours(tag: str) -> list[str]:
    """Namespaces and links whose names carry `tag`: what one stack made."""
    return [name for name in netns.owned_netns() + netns.owned_links() if name.startswith(tag)]


def status(stack: StackDir) -> dict[str, dict[str, Any]]:
    report = json.loads(ok(stack.run("status", "--json")).stdout)
    return {p["name"]: p for p in report["processes"]}


def test_up_hosts_runs_each_process_on_its_host_and_down_removes_the_hosts(
    stack_dir: StackDir,
) -> None:
    out = ok(stack_dir.run("up", "--hosts", "--flower")).stdout
    state = stack_dir.state()
    tag = state["network"]["tag"]
    hosts = state["network"]["hosts"]
    assert sorted(hosts) == ["gw", "redis", "w1", "w2"]
    assert all(address.startswith("198.18.") for address in hosts.values())
    assert len(set(hosts.values())) == 4
    assert f"hosts    redis {hosts['redis']}" in out

    by_name = status(stack_dir)
    placed = {name: p["host"] for name, p in by_name.items() if name != "network"}
    assert placed == {
        "redis": "redis",
        "relay": "gw",
        "flower": "gw",
        "worker1": "w1",
        "worker2": "w2",
    }
    assert all(p["address"] == hosts[p["host"]] for p in by_name.values() if p["host"])
    assert all(p["alive"] for p in by_name.values())
    assert state["redis_url"].startswith(f"redis://{hosts['redis']}:")
    table = ok(stack_dir.run("status")).stdout
    assert any(line.split()[:3] == ["worker2", "w2", hosts["w2"]] for line in table.splitlines())

    # From this machine (the root namespace) over the bridge, as a producer elsewhere would.
    with stack_dir.client() as client:
        assert {w.name for w in client.workers()} == {"worker1@w1", "worker2@w2"}
        job = client.submit("hosts", model="tiny", max_tokens=8, seed=1, ignore_eos=True)
        assert job.result(timeout=60).usage.completion_tokens == 8
    assert len(ours(tag)) == 4 + 4 + 1  # a namespace and a veth end per host, the bridge
    workers_by_host(stack_dir, hosts)
    flower_by_host(by_name["flower"]["url"], hosts)

    ok(stack_dir.run("down"))
    assert ours(tag) == []
    assert not [name for name, pid in pids(state).items() if running(pid)]


def workers_by_host(stack: StackDir, hosts: dict[str, str]) -> None:
    """`genq workers`: each worker with the address it reaches Redis from, its host's (the
    hostname is this machine's for all of them: namespaces share it), sorted by host."""
    env = {"GENQ_REDIS_URL": stack.state()["redis_url"], "GENQ_CACHE_DIR": str(stack.cache)}
    found = json.loads(ok(run_genq(env, "workers", "--json")).stdout)
    assert [(w["name"], w["hostname"], w["address"]) for w in found] == [
        ("worker1@w1", socket.gethostname(), hosts["w1"]),
        ("worker2@w2", socket.gethostname(), hosts["w2"]),
    ]
    table = ok(run_genq({**env, "COLUMNS": "200"}, "workers")).stdout.splitlines()
    assert re.split(" {2,}", table[0])[:2] == ["host", "name"]
    assert [re.split(" {2,}", line)[:2] for line in table[1:]] == [
        [f"{socket.gethostname()} ({hosts['w1']})", "worker1@w1"],
        [f"{socket.gethostname()} ({hosts['w2']})", "worker2@w2"],
    ]


def flower_by_host(url: str, hosts: dict[str, str]) -> None:
    """Flower's workers, named after their hosts, each with its host in its Config tab."""
    wanted = {"worker1@w1": hosts["w1"], "worker2@w2": hosts["w2"]}
    wait_for(lambda: set(wanted) <= set(flower_workers(url)), 60, "Flower to list both workers")
    conf = {name: worker["conf"] for name, worker in flower_workers(url).items()}
    assert {name: conf[name]["genq_address"] for name in wanted} == wanted
    assert {conf[name]["genq_host"] for name in wanted} == {socket.gethostname()}


def flower_workers(url: str) -> dict[str, Any]:
    """Flower's /api/workers, asking each worker afresh (its `conf` among the answers)."""
    with urllib.request.urlopen(f"{url}/api/workers?refresh=1", timeout=30) as answer:
        found: dict[str, Any] = json.load(answer)
        return found


def test_hosts_a_crashed_stack_left_are_removed_by_the_next_up(
    stack_dir: StackDir, tmp_path: Path
) -> None:
    ok(stack_dir.run("up", "--hosts", "--workers", "1"))
    crashed = stack_dir.state()
    for pid in pids(crashed).values():  # every process, the keeper that names the hosts too
        os.killpg(pid, signal.SIGKILL)
    shutil.rmtree(stack_dir.path)  # and its state with it: only the leftovers say what it was
    assert ours(crashed["network"]["tag"]) != []

    second = StackDir(tmp_path / "second")
    try:
        ok(second.run("up", "--hosts", "--workers", "1"))
        assert ours(crashed["network"]["tag"]) == []
        assert ours(second.state()["network"]["tag"]) != []
    finally:
        ok(second.run("down"))


def test_up_hosts_where_namespaces_cannot_be_made_exits_with_one_line(tmp_path: Path) -> None:
    """As root, a PATH without `ip` stands in for a machine without namespaces; as anyone
    else, not being root is the reason."""
    stack = StackDir(tmp_path / "stack")
    tools = tmp_path / "bin"  # what ops/stack itself needs, and no `ip`
    tools.mkdir()
    for tool in ("bash", "dirname"):
        (tools / tool).symlink_to(shutil.which(tool) or tool)
    expected = (
        "no `ip` command (Debian: apt-get install iproute2)"
        if os.geteuid() == 0
        else "network namespaces (ip netns) need root"
    )
    command = subprocess.run(
        [str(STACK), "up", "--hosts", "--dir", str(stack.path)],
        env={**stack.env, "PATH": str(tools)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert command.returncode == 1
    assert command.stderr.splitlines() == [f"ops/stack: error: --hosts: {expected}"]
    assert not stack.path.exists()  # checked before anything was made
