"""GENQ_REDIS_URL's Sentinel form (redis+sentinel://) against a real primary, replica and three
Sentinels on loopback: a job runs end to end through it (worker and relay over kombu's
Sentinel transport, the CLI, Flower's broker page) and its password never shows; a URL that
reaches no Sentinel, names an unknown primary, or leads to a replica makes each command exit
with one line naming what was tried, before anything is queued."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from genq.common.store.keys import Keys
from ops.localstack import free_port
from ops.sentinels import ReplicatedRedis
from tests.state import job_record

from .conftest import Stack
from .support import run_genq

PASSWORD = "s3c/r@t:p%ss"
QUOTED = urllib.parse.quote(PASSWORD, safe="")
SERVES_TINY = ("--models", "tiny")  # not the session registry's broken model
LOOPBACK = ("127.0.0.1", ())
BAD_DB = 5  # the database the bad URLs name: it must stay empty


@pytest.fixture(scope="module")
def replicated() -> Iterator[ReplicatedRedis]:
    ha = ReplicatedRedis.on(LOOPBACK, [LOOPBACK], [LOOPBACK] * 3, password=PASSWORD).start()
    yield ha
    ha.stop()


def sentinel_url(ha: ReplicatedRedis, db: int, name: str = "genq") -> str:
    hosts = ",".join(f"{s.host}:{s.port}" for s in ha.sentinels)
    return f"redis+sentinel://:{QUOTED}@{hosts}/{name}/{db}"


def test_a_job_runs_through_sentinels_and_the_password_never_shows(
    replicated: ReplicatedRedis, genq_env: dict[str, str], tmp_path: Path
) -> None:
    stack = Stack({**genq_env, "GENQ_REDIS_URL": sentinel_url(replicated, 1)}, tmp_path)
    try:
        stack.relay()
        stack.worker("watched", *SERVES_TINY)
        flower = stack.flower(FLOWER_UNAUTHENTICATED_API="true")
        args = ("--model", "tiny", "--max-tokens", "6", "--seed", "1")
        ran = run_genq(stack.env, "run", "Once upon", *args)
        assert ran.returncode == 0, ran.stderr
        job_id = ran.stderr.rsplit("job ", 1)[1].split()[0]
        status = run_genq(stack.env, "status", job_id, "--json")
        assert json.loads(status.stdout)["state"] == "succeeded", status.stderr
        broker = flower.get("/broker").decode()
        assert "cpu.tiny" in broker  # Flower read the queue through kombu's Sentinel spelling
        assert "not supported" not in broker
    finally:
        stack.stop()
    primary = redis.Redis(
        *replicated.primary_address(), password=PASSWORD, db=1, decode_responses=True
    )
    job_record(primary, Keys("genq"), job_id)  # written on the primary the Sentinels name
    shown = [out for done in (ran, status) for out in (done.stdout, done.stderr)]
    shown += [broker, *(log.read_text() for log in tmp_path.glob("*.log"))]
    for text in shown:
        assert PASSWORD not in text and QUOTED not in text


def bad_urls(ha: ReplicatedRedis) -> dict[str, tuple[str, str]]:
    """Each bad URL, with what its one line must say."""
    nobody = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    replica = ha.replicas[0]
    return {
        "no-sentinel": (
            f"redis+sentinel://:{QUOTED}@{nobody}/genq/{BAD_DB}",
            f"no Sentinel answered for redis+sentinel://:***@{nobody}/genq/{BAD_DB}: ",
        ),
        "unknown-primary": (
            sentinel_url(ha, BAD_DB, "nosuch"),
            "monitors no primary named 'nosuch' (redis+sentinel://:***@",
        ),
        "replica": (
            f"redis://:{QUOTED}@{replica.host}:{replica.port}/{BAD_DB}",
            f"Redis at redis://:***@{replica.host}:{replica.port}/{BAD_DB} is a replica, "
            "not a primary",
        ),
    }


COMMANDS = {
    "submit": ["submit", "{batch_file}"],
    "run": ["run", "Once upon", "-n", "4"],
    "worker": ["worker", *SERVES_TINY],
    "relay": ["relay"],
    "serve": ["serve", "--port", "{port}"],
}


@pytest.mark.parametrize("case", ["no-sentinel", "unknown-primary", "replica"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_bad_url_makes_each_command_exit_with_one_line_and_queue_nothing(
    replicated: ReplicatedRedis, genq_env: dict[str, str], tmp_path: Path, case: str, command: str
) -> None:
    url, says = bad_urls(replicated)[case]
    batch_file = tmp_path / "batch.jsonl"
    batch_file.write_text('{"custom_id": "a", "prompt": "Once", "max_tokens": 4}\n')
    fills = {"batch_file": str(batch_file), "port": str(free_port())}
    args = [arg.format(**fills) for arg in COMMANDS[command]]
    done = run_genq({**genq_env, "GENQ_REDIS_URL": url}, *args, timeout_s=60)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genq: error: "), done.stderr
    assert says in lines[0]
    assert PASSWORD not in done.stderr and QUOTED not in done.stderr
    for server in replicated.servers:  # nothing queued or written, on any of them
        assert redis.Redis(server.host, server.port, password=PASSWORD, db=BAD_DB).dbsize() == 0
