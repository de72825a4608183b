"""`ops/stack up | status | down` as a user runs it: a subprocess starting real processes
(redis-server, relay, workers, Flower) that outlive it, and a `down` that leaves nothing
behind: no process, no bound port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from genq import Client
from genq.common.frames import DoneFrame, TokenFrame
from ops.localstack import settings_for, wait_for

STACK = Path(__file__).parents[2] / "ops" / "stack"
PROC = Path("/proc")

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not (PROC / "self" / "stat").exists(), reason="reads /proc (Linux)"),
]


class StackDir:
    """One run directory and the `ops/stack` commands run on it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cache = path.parent / "cache"
        # Only what the caller sets: no GENQ_REDIS_URL, so that `up` starts its own Redis.
        self.env = {name: v for name, v in os.environ.items() if not name.startswith("GENQ_")}
        self.env |= {
            "VIRTUAL_ENV": str(Path(sys.executable).parent.parent),  # the launcher's python
            "GENQ_CACHE_DIR": str(self.cache),
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.finish(self.start(*args))

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(STACK), *args, "--dir", str(self.path)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @staticmethod
    def finish(command: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
        out, err = command.communicate(timeout=240)
        return subprocess.CompletedProcess(command.args, command.returncode, out, err)

    def state(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((self.path / "state.json").read_text())
        return loaded

    def client(self) -> Client:
        env = {"GENQ_REDIS_URL": self.state()["redis_url"], "GENQ_CACHE_DIR": str(self.cache)}
        return Client(settings_for(env))


@pytest.fixture
def stack_dir(tmp_path: Path) -> Iterator[StackDir]:
    """A run directory; whatever a test leaves running there is brought down afterwards."""
    stack = StackDir(tmp_path / "stack")
    yield stack
    if (stack.path / "state.json").exists():
        stack.run("down")


def ok(done: subprocess.CompletedProcess[str], code: int = 0) -> subprocess.CompletedProcess[str]:
    assert done.returncode == code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def pids(state: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["pid"] for p in state["processes"]}


def running(pid: int) -> bool:
    """A live process (a zombie, dead but not yet reaped by its parent, is not)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def processes_of(stack: StackDir, state: dict[str, Any]) -> list[str]:
    """Live processes whose command line or environment names this stack: its run id, its
    directory, or one of its process groups."""
    marks = [state["run_id"].encode(), str(stack.path).encode()]
    groups = set(pids(state).values())
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or not running(int(entry.name)):
            continue
        try:
            text = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
            pgid = os.getpgid(int(entry.name))
        except (OSError, ProcessLookupError):
            continue
        if pgid in groups or any(mark in text for mark in marks):
            found.append(f"{entry.name}: {text[:200]!r}")
    return found


def assert_all_gone(stack: StackDir, state: dict[str, Any]) -> None:
    assert not [name for name, pid in pids(state).items() if running(pid)]
    assert processes_of(stack, state) == []
    for port in [p["port"] for p in state["processes"] if p["port"]]:
        with socket.socket() as sock:  # raises if something still listens there
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
            sock.bind(("127.0.0.1", port))
    assert not (stack.path / "state.json").exists()
    assert not list(stack.path.glob("*.pid"))


def flower_workers(url: str) -> set[str]:
    try:
        with urllib.request.urlopen(f"{url}/api/workers?refresh=1", timeout=10) as answer:
            return set(json.load(answer))
    except OSError:
        return set()


def test_up_runs_a_stack_that_runs_jobs_and_down_leaves_nothing(stack_dir: StackDir) -> None:
    # Two at once on one directory: one starts the stack, the other finds it running.
    both = [stack_dir.start("up", "--workers", "2", "--flower") for _ in range(2)]
    outputs = [ok(stack_dir.finish(up)).stdout for up in both]
    assert sorted("already running" in out for out in outputs) == [False, True]
    assert all("ops/stack down" in out and "genq run" in out for out in outputs)

    status = ok(stack_dir.run("status", "--json"))
    report = json.loads(status.stdout)
    by_name = {p["name"]: p for p in report["processes"]}
    assert set(by_name) == {"redis", "relay", "worker1", "worker2", "flower"}
    assert all(p["alive"] for p in report["processes"])
    assert len({p["port"] for p in report["processes"]}) == 5  # a port each
    state = stack_dir.state()

    with stack_dir.client() as client:
        assert {w.name.split("@")[0] for w in client.workers()} == {"worker1", "worker2"}
        job = client.submit("stack", max_tokens=8, seed=1, ignore_eos=True)
        frames = list(job.stream(timeout=60))
        assert isinstance(frames[-1], DoneFrame)
        text = "".join(f.data.text for f in frames if isinstance(f, TokenFrame))
        assert job.result().usage.completion_tokens == 8
        assert job.result().text == text
    flower = by_name["flower"]["url"]
    wait_for(
        lambda: {"worker1", "worker2"} <= {n.split("@")[0] for n in flower_workers(flower)},
        60,
        "Flower to list both workers",
    )

    sourced = subprocess.run(
        ["bash", "-c", f'source {stack_dir.path / "env"} && printf %s "$GENQ_REDIS_URL"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert sourced.stdout == state["redis_url"]

    again = ok(stack_dir.run("up", "--workers", "2", "--flower"))
    assert "already running" in again.stdout
    assert pids(stack_dir.state()) == pids(state)

    ok(stack_dir.run("down"))
    assert_all_gone(stack_dir, state)
    assert (stack_dir.path / "worker1.log").stat().st_size > 0  # logs stay
    ok(stack_dir.run("status"), code=3)
    assert "nothing to stop" in ok(stack_dir.run("down")).stdout


def test_a_killed_worker_makes_up_refuse_and_down_still_cleans_up(stack_dir: StackDir) -> None:
    ok(stack_dir.run("up"))
    state = stack_dir.state()
    with stack_dir.client() as client:
        job_id = client.submit("kept", max_tokens=4, seed=2, ignore_eos=True).job_id
        text = client.job(job_id).result(timeout=60).text

    os.kill(pids(state)["worker1"], signal.SIGKILL)  # its pool process is left behind
    wait_for(lambda: not running(pids(state)["worker1"]), 10, "worker1 to die")

    status = ok(stack_dir.run("status", "--json"), code=1)
    assert [p["name"] for p in json.loads(status.stdout)["processes"] if not p["alive"]] == [
        "worker1"
    ]
    refused = ok(stack_dir.run("up"), code=1)
    assert "partly running" in refused.stderr and "ops/stack down" in refused.stderr
    assert pids(stack_dir.state()) == pids(state)  # nothing started, nothing forgotten

    ok(stack_dir.run("down"))
    assert_all_gone(stack_dir, state)

    # Redis kept its data (append-only file): the job is still there after a new `up`.
    ok(stack_dir.run("up"))
    restarted = stack_dir.state()
    with stack_dir.client() as client:
        assert client.job(job_id).result(timeout=10).text == text
    ok(stack_dir.run("down"))
    assert_all_gone(stack_dir, restarted)


def test_up_with_the_gateway_serves_the_api_and_its_page_and_down_stops_it(
    stack_dir: StackDir,
) -> None:
    out = ok(stack_dir.run("up", "--gateway")).stdout
    report = json.loads(ok(stack_dir.run("status", "--json")).stdout)
    gateway = {p["name"]: p for p in report["processes"]}["gateway"]
    assert gateway["alive"] and gateway["role"] == "gateway"
    url = gateway["url"]
    assert url == f"http://127.0.0.1:{gateway['port']}" and f"gateway  {url}" in out
    with urllib.request.urlopen(url + "/", timeout=10) as page:
        assert b"<title>genq</title>" in page.read()
    body = {"model": "tiny", "prompt": "stack", "max_tokens": 4, "ignore_eos": True}
    request = urllib.request.Request(
        url + "/v1/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        completion = json.load(answer)
    assert completion["usage"]["completion_tokens"] == 4
    state = stack_dir.state()
    ok(stack_dir.run("down"))
    assert_all_gone(stack_dir, state)
    assert (stack_dir.path / "gateway.log").stat().st_size > 0
