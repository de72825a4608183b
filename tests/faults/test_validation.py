"""Hostile input through the real `genq` CLI and the Python client: every value the code cannot
process is refused up front (exit code 2, one clear reason, nothing left in Redis), never a
traceback, a hang or memory that grows without bound.

The tests share a Redis database of their own, with no worker on it, so that "nothing in
Redis" is one DBSIZE, and a job that should not have been queued stays visible.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from genq import AsyncClient, Client, InvalidJob
from genq.common.settings import Settings
from genq.common.store import batches, run
from genq.common.store.keys import Keys
from tests.integration.conftest import new_stack
from tests.integration.support import GENQ

JOB_ID = "0123456789abcdef" * 2  # a job id no job has
# A refused submission must not use memory as it reads: a CLI that reads /dev/zero hits this
# and fails fast instead of growing (by about 500 MB/s) until the machine runs out.
CLI_MEMORY_BYTES = 2 * 2**30


@pytest.fixture(scope="module")
def env(
    genq_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, databases: Iterator[int]
) -> dict[str, str]:
    """GENQ_* variables for a Redis database of this module's own (no worker serves it)."""
    return new_stack(genq_env, tmp_path_factory.mktemp("validation"), databases).env


@pytest.fixture
def db(env: dict[str, str]) -> Iterator[redis.Redis]:
    """The module's database, empty at the start of each test."""
    r = redis.Redis.from_url(env["GENQ_REDIS_URL"], decode_responses=True)
    r.flushdb()
    yield r
    r.close()


@pytest.fixture
def quiet_settings(env: dict[str, str]) -> Settings:
    return Settings(redis_url=env["GENQ_REDIS_URL"], models_file=env["GENQ_MODELS_FILE"])


def genq(
    env: dict[str, str], *args: str, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """`genq ARGS` with its address space capped (see CLI_MEMORY_BYTES)."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (CLI_MEMORY_BYTES, CLI_MEMORY_BYTES))

    return subprocess.run(
        [str(GENQ), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        preexec_fn=cap,
    )


def refused(done: subprocess.CompletedProcess[str]) -> str:
    """The CLI's error, checked to be a usage error (exit 2) told without a traceback."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    return " ".join(done.stderr.split())  # rich wraps long lines


def batch_file(tmp_path: Path, *lines: str | bytes) -> Path:
    path = tmp_path / "batch.jsonl"
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def good(custom_id: str = "ok") -> str:
    return json.dumps({"custom_id": custom_id, "prompt": "Once", "max_tokens": 2})


# A lone surrogate escape ("\ud800") is valid JSON and cannot be encoded as UTF-8.

SURROGATES = {
    "prompt": '{"custom_id": "q1", "prompt": "a\\ud800", "max_tokens": 2}',
    "custom_id": '{"custom_id": "q\\udfff", "prompt": "p", "max_tokens": 2}',
    "stop.0": '{"custom_id": "q3", "prompt": "p", "stop": ["\\udc00"]}',
    "body.messages.0.content": json.dumps(
        {
            "custom_id": "q4",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": "hi \ud800"}]},
        }
    ),
}


def test_a_lone_surrogate_in_a_batch_line_is_refused_by_line_and_nothing_is_stored(
    env: dict[str, str], db: redis.Redis, tmp_path: Path
) -> None:
    path = batch_file(tmp_path, good(), *SURROGATES.values())
    said = refused(genq(env, "submit", str(path), "--batch-id", "surrogates"))
    assert "4 invalid lines; nothing was submitted" in said
    for number, where in enumerate(SURROGATES, 2):
        assert f"line {number}: {where}: cannot be encoded as UTF-8: a lone surrogate" in said
    assert db.dbsize() == 0


def test_a_batch_whose_every_line_is_refused_leaves_no_batch_behind(
    env: dict[str, str], db: redis.Redis, tmp_path: Path
) -> None:
    path = batch_file(tmp_path, SURROGATES["custom_id"])
    said = refused(genq(env, "submit", str(path), "--batch-id", "b1", "--skip-invalid"))
    assert "every line is invalid; nothing was submitted" in said
    assert db.dbsize() == 0  # no batch record: `genq status b1` says there is no batch


def test_a_lone_surrogate_prompt_is_refused_by_genq_run(
    env: dict[str, str], db: redis.Redis
) -> None:
    # An argument that is not UTF-8 reaches Python as a lone surrogate (surrogateescape).
    said = refused(genq(env, "run", "caf\udce9", "--max-tokens", "2"))
    assert "prompt: cannot be encoded as UTF-8: a lone surrogate (\\udce9) at character 3" in said
    assert db.dbsize() == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"prompt": "\ud800"},
        {"messages": [{"role": "user", "content": "x\udfff"}]},
        {"prompt": "p", "stop": ["\udc80"]},
    ],
    ids=["prompt", "message", "stop"],
)
def test_client_submit_refuses_a_lone_surrogate_as_invalid_job(
    quiet_settings: Settings, db: redis.Redis, fields: dict[str, Any]
) -> None:
    with Client(quiet_settings) as client, pytest.raises(InvalidJob, match="cannot be encoded"):
        client.submit(**fields)

    async def submit_async() -> None:
        async with AsyncClient(quiet_settings) as client:
            await client.submit(**fields)

    with pytest.raises(InvalidJob, match="cannot be encoded"):
        asyncio.run(submit_async())
    assert db.dbsize() == 0


# Limits before parsing, and files that are not files.


def test_a_line_nested_100000_deep_is_refused_naming_the_limit(
    env: dict[str, str], db: redis.Redis, tmp_path: Path
) -> None:
    deep = '{"custom_id": "q", "prompt": "p", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    said = refused(genq(env, "submit", str(batch_file(tmp_path, deep))))
    assert "line 1: nested deeper than 32 levels (arrays and objects)" in said
    assert db.dbsize() == 0


def test_a_line_over_16_mib_is_refused_and_only_its_start_kept_as_the_reject(
    env: dict[str, str], db: redis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "batch.jsonl"
    with path.open("wb") as file:  # one line of 20 MiB with no newline, after a good one
        file.write(good("a").encode() + b"\n" + b'{"custom_id": "b", "prompt": "')
        file.write(b"x" * 20 * 2**20)
    rejects = tmp_path / "rejects.jsonl"
    done = genq(env, "submit", str(path), "--skip-invalid", "--rejects", str(rejects))
    assert done.returncode == 0, done.stderr
    [reject] = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert reject["line"] == 2
    assert reject["error"] == "line longer than 16,777,216 bytes (16 MiB), the limit on a line"
    assert len(reject["input"]) == 1000
    status = run(db, batches.status(Keys(), done.stdout.strip()))
    assert status is not None and status.total == 1


def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    ("make", "what"),
    [(lambda tmp: Path("/dev/zero"), "a character device"), (fifo, "a FIFO (named pipe)")],
    ids=["dev-zero", "fifo"],
)
def test_a_special_file_is_refused_at_once(
    env: dict[str, str], db: redis.Redis, tmp_path: Path, make: Any, what: str
) -> None:
    path = make(tmp_path)
    started = time.monotonic()
    said = refused(genq(env, "submit", str(path), timeout_s=30))
    assert f"{path}: {what}, not a regular file; a batch is a JSONL file" in said
    assert time.monotonic() - started < 20  # refused, not read until a limit
    assert db.dbsize() == 0


def test_client_submit_batch_refuses_a_directory_as_invalid_batch(
    quiet_settings: Settings, db: redis.Redis, tmp_path: Path
) -> None:
    with Client(quiet_settings) as client, pytest.raises(InvalidJob, match="a directory"):
        client.submit_batch(tmp_path)
    assert db.dbsize() == 0


# Strict types.


def test_numbers_and_ids_of_the_wrong_type_are_refused_by_line(
    env: dict[str, str], db: redis.Redis, tmp_path: Path
) -> None:
    lines = [
        '{"custom_id": "a", "prompt": "p", "max_tokens": "10"}',
        '{"custom_id": "b", "prompt": "p", "max_tokens": true}',
        '{"custom_id": 1, "prompt": "p"}',
        '{"custom_id": "c", "prompt": "p", "temperature": NaN}',
        '{"custom_id": "d", "prompt": "p", "temperature": 1e999}',
    ]
    said = refused(genq(env, "submit", str(batch_file(tmp_path, *lines))))
    assert "5 invalid lines; nothing was submitted" in said
    for expected in [
        "line 1: max_tokens: Input should be an integer, got a string",
        "line 2: max_tokens: Input should be an integer, got a boolean",
        "line 3: custom_id: must be a string, got the number 1",
        "line 4: invalid JSON: NaN is not a JSON value (JSON numbers are finite)",
        "line 5: temperature: Input should be a finite number, got inf",
    ]:
        assert expected in said
    assert db.dbsize() == 0


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"max_tokens": "10"}, "max_tokens: Input should be an integer, got a string"),
        ({"max_tokens": True}, "max_tokens: Input should be an integer, got a boolean"),
        ({"temperature": float("nan")}, "temperature: Input should be a finite number, got nan"),
        ({"priority": True}, "priority must be an integer, got a boolean"),
        ({"expires_in": float("nan")}, "expires_in must be positive and finite, got nan"),
    ],
    ids=["string", "boolean", "nan", "priority-boolean", "expires-nan"],
)
def test_client_submit_refuses_numbers_of_the_wrong_type(
    quiet_settings: Settings, db: redis.Redis, fields: dict[str, Any], says: str
) -> None:
    with Client(quiet_settings) as client, pytest.raises(InvalidJob) as caught:
        client.submit("p", **fields)
    assert says in str(caught.value)
    assert db.dbsize() == 0


# Ids.


def test_an_empty_batch_id_is_refused(env: dict[str, str], db: redis.Redis, tmp_path: Path) -> None:
    said = refused(genq(env, "submit", str(batch_file(tmp_path, good())), "--batch-id", ""))
    assert "not a batch id: '' (1-64 characters of letters, digits, '_', '.', '-')" in said
    assert db.dbsize() == 0


def test_status_of_an_unknown_job_id_says_neither_a_job_nor_a_batch_was_found(
    env: dict[str, str], db: redis.Redis
) -> None:
    said = refused(genq(env, "status", JOB_ID))
    assert said == (
        f"genq: error: no job or batch {JOB_ID}: neither was found; never submitted, or its "
        "retention has passed"
    )


def test_status_of_an_unknown_batch_says_it_looked_for_a_batch(
    env: dict[str, str], db: redis.Redis
) -> None:
    said = refused(genq(env, "status", "nightly-42"))
    assert said == (
        "genq: error: no batch nightly-42 (not a job id, so no job was looked for); never "
        "submitted, or its retention has passed"
    )


def test_status_finds_a_job_by_its_id_and_a_batch_named_like_a_job_id(
    env: dict[str, str], db: redis.Redis, quiet_settings: Settings, tmp_path: Path
) -> None:
    with Client(quiet_settings) as client:
        job = client.submit("p", max_tokens=2)
    shown = genq(env, "status", job.job_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["state"] == "queued"
    with Client(quiet_settings) as client:
        client.submit_batch([good()], batch_id=JOB_ID)
    shown = genq(env, "status", JOB_ID, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["total"] == 1
