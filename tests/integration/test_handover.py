"""Settings resolved once: `genq worker`, `genq relay` and `genq serve` hand the processes they
start one plan, GENQ_PLAN, and write no other GENQ_* variable; plain `celery -A
genq.workers.app worker` reads its GENQ_* variables itself."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from genq import Client, WorkerInfo
from genq.common.handover import PLAN_ENV, ProcessPlan
from ops.localstack import Gateway, Relay, genq_executable, stop_process, wait_for

from .conftest import Stack
from .support import run_genq

TIMEOUT_S = 60


def environment(pid: int) -> dict[str, str]:
    """A running process's environment, as the kernel shows it."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (entry.partition(b"=") for entry in raw.split(b"\0") if entry)
    return {name.decode(): value.decode() for name, _, value in pairs}


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def genq_names(env: dict[str, str]) -> set[str]:
    return {name for name in env if name.startswith("GENQ_")}


def presence(client: Client, pid: int) -> WorkerInfo:
    """The worker's record in Redis, once it has written it."""
    found: list[WorkerInfo] = []

    def recorded() -> bool:
        found[:] = [info for info in client.workers() if info.pid == pid]
        return bool(found)

    wait_for(recorded, TIMEOUT_S, f"the presence record of worker pid {pid}")
    return found[0]


def test_genq_worker_hands_its_slots_and_models_to_the_worker_in_one_variable(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()
    stack.relay()
    worker = stack.worker("planned", "--slots", "3", "--models", "tiny")
    assert worker.proc is not None
    pid = worker.proc.pid  # `genq worker` became celery: the same process
    child = environment(pid)
    assert genq_names(child) == genq_names({**os.environ, **stack.env}) | {PLAN_ENV}
    plan = ProcessPlan.model_validate_json(child[PLAN_ENV])
    assert (plan.settings.slots, plan.settings.worker_models) == (3, ("tiny",))
    assert plan.settings.redis_url == stack.env["GENQ_REDIS_URL"]

    with Client(stack.settings) as client:
        info = presence(client, pid)
        assert (info.models, info.queues, info.slots) == (["tiny"], ["cpu.tiny"], {"tiny": 3})
        assert client.submit("Handed", model="tiny", max_tokens=4, seed=1).result(timeout=TIMEOUT_S)
    listed = run_genq(stack.env, "workers", "--json")
    assert listed.returncode == 0, listed.stderr
    (shown,) = [w for w in json.loads(listed.stdout) if w["pid"] == pid]
    assert shown["slots"] == {"tiny": 3}


def with_password(url: str, password: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://:{password}@{rest}"


@dataclass
class RedisUrlRelay(Relay):
    """`genq --redis-url URL relay`."""

    url: str = ""

    def argv(self) -> list[str]:
        return [str(genq_executable()), "--redis-url", self.url, "relay"]


@contextmanager
def without(name: str) -> Iterator[None]:
    """This process's environment without `name` while a child is started from it."""
    saved = os.environ.pop(name, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[name] = saved


def test_genq_relay_is_handed_the_redis_url_of_the_command_line_never_in_its_arguments(
    make_stack: Callable[[], Stack], tmp_path: Path
) -> None:
    stack = make_stack()
    env = {name: value for name, value in stack.env.items() if name != "GENQ_REDIS_URL"}
    url = with_password(stack.env["GENQ_REDIS_URL"], "unchecked-secret")  # no requirepass
    relay = RedisUrlRelay(env=env, log=tmp_path / "relay.log", url=url)
    with without("GENQ_REDIS_URL"):
        relay.start()
        inherited = genq_names({**os.environ, **env})
    try:
        assert relay.proc is not None
        child = environment(relay.proc.pid)
        assert genq_names(child) == inherited | {PLAN_ENV}  # no GENQ_REDIS_URL written
        assert ProcessPlan.model_validate_json(child[PLAN_ENV]).settings.redis_url == url
        assert "unchecked-secret" not in command_line(relay.proc.pid)
        logged = relay.log.read_text()
        assert stack.env["GENQ_REDIS_URL"].removeprefix("redis://") in logged  # its Redis
        assert "unchecked-secret" not in logged
    finally:
        relay.stop()


def test_plain_celery_reads_its_genq_variables_and_serves_jobs(
    make_stack: Callable[[], Stack], tmp_path: Path
) -> None:
    stack = make_stack()
    stack.relay()
    env = {**os.environ, **stack.env, "GENQ_SLOTS": "2", "GENQ_WORKER_MODELS": "tiny"}
    env.pop(PLAN_ENV, None)
    name = f"plain@{socket.gethostname()}"
    command = [sys.executable, "-m", "celery", "-A", "genq.workers.app", "worker", "-n", name]
    with (tmp_path / "celery.log").open("wb") as log:
        proc = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        with Client(stack.settings) as client:
            info = presence(client, proc.pid)
            assert (info.name, info.queues, info.slots) == (name, ["cpu.tiny"], {"tiny": 2})
            handle = client.submit("Plain", model="tiny", max_tokens=4, seed=1)
            assert handle.result(timeout=TIMEOUT_S).model == "tiny"
    finally:
        stop_process(proc, group=True)


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def status_of(gateway: Gateway, key: str | None) -> int:
    request = urllib.request.Request(gateway.url + "/v1/models")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return refused.code


def test_each_gateway_process_of_genq_serve_is_handed_its_plan(
    genq_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**genq_env, "GENQ_API_KEYS": "handed-key"}
    gateway = Gateway(env=env, log=tmp_path / "gateway.log", args=("--workers", "2"))
    gateway.start()
    try:
        assert gateway.proc is not None
        pid = gateway.proc.pid
        wait_for(lambda: len(children(pid)) >= 2, TIMEOUT_S, "two gateway processes")
        for child in children(pid):
            child_env = environment(child)
            assert genq_names(child_env) == genq_names({**os.environ, **env}) | {PLAN_ENV}
            plan = ProcessPlan.model_validate_json(child_env[PLAN_ENV]).settings
            assert (plan.http_host, plan.http_port) == ("127.0.0.1", gateway.port)
        assert [status_of(gateway, key) for key in ("handed-key", None)] == [200, 401]
    finally:
        gateway.stop()
