"""Readers against stream entries that do not validate. Anything with XADD rights can write a
job's stream, so the Python stream and `genq tail` skip such entries, report them (a warning
naming the job and the entry, a count in the stream's statistics and in `genq tail`'s summary)
and still end with the job's text, exit 0."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
from typing import Any

import pytest
import redis

from genq import AsyncClient, Client, GenqError
from genq.common.store import run, streams
from genq.common.store.streams import FRAME_FIELD as F
from tests.integration.support import GENQ

JOB: dict[str, Any] = {
    "prompt": "readers",
    "max_tokens": 600,
    "window_tokens": 100,
    "seed": 21,
    "ignore_eos": True,
}


def spoil(r: redis.Redis, client: Client, job_id: str) -> list[str]:
    """Rewrite a finished job's stream with four of its token frames replaced by entries that
    do not validate, as a hostile writer could add them; the ids of the spoiled entries. The
    rewrite is raw XADDs on purpose: no store command writes what genq never would."""
    key = streams.stream_key(client.keys, job_id)
    entries: list[tuple[str, dict[str, str]]] = run(r, streams.frames(client.keys, job_id))
    tokens = [i for i, (_, f) in enumerate(entries) if json.loads(f[F])["type"] == "token"]
    picks = [tokens[1], tokens[len(tokens) // 3], tokens[len(tokens) // 2], tokens[-2]]
    bad_body = json.loads(entries[picks[0]][1][F])
    bad_body["data"]["text"] = 12345  # a valid header, a body of the wrong type
    other_job = entries[picks[3]][1][F].replace(job_id, "f" * 32)
    spoiled = {
        picks[0]: {F: json.dumps(bad_body)},
        picks[1]: {F: '{"v":1,"job_id":"' + job_id + '","epoch":0,"seq":'},  # cut short
        picks[2]: {"frame": entries[picks[2]][1][F]},  # not in the field the relay uses
        picks[3]: {F: other_job},  # another job's frame
    }
    r.delete(key)
    for i, (entry_id, fields) in enumerate(entries):
        r.xadd(key, spoiled.get(i, fields), id=entry_id)  # type: ignore[arg-type]
    return [entries[i][0] for i in picks]


@pytest.fixture
def spoiled(client: Client, redis_client: redis.Redis) -> tuple[str, str, list[str]]:
    """A finished job whose stream has four invalid entries: (job id, its text, their ids)."""
    job = client.submit(**JOB)
    text = job.result(timeout=60).text
    return job.job_id, text, spoil(redis_client, client, job.job_id)


def test_stream_skips_and_reports_entries_that_do_not_validate(
    client: Client, spoiled: tuple[str, str, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    job_id, text, bad = spoiled
    with caplog.at_level(logging.WARNING), client.job(job_id).stream(timeout=30) as stream:
        frames = list(stream)
    assert frames[-1].type == "done"
    assert stream.text == stream.result.text == text
    assert stream.stats.skipped == len(bad)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for entry_id in bad:
        assert any(job_id in w and f"entry {entry_id}" in w for w in warnings), warnings


def test_async_stream_skips_entries_that_do_not_validate(
    client: Client, spoiled: tuple[str, str, list[str]]
) -> None:
    job_id, text, bad = spoiled

    async def read() -> tuple[str, int]:
        async with AsyncClient(client.settings) as aclient:
            job = await aclient.job(job_id)
            stream = job.stream(timeout=30)
            async for _ in stream:
                pass
            return stream.text, stream.stats.skipped

    assert asyncio.run(read()) == (text, len(bad))


def test_a_junk_checkpoint_entry_leaves_the_text_to_the_result(
    client: Client, spoiled: tuple[str, str, list[str]], redis_client: redis.Redis
) -> None:
    job_id, text, _ = spoiled
    # A raw write on purpose: junk that no store command would write.
    redis_client.lset(streams.checkpoint_key(client.keys, job_id), 0, "junk")
    with client.job(job_id).stream(timeout=30) as stream:
        for _ in stream:
            pass
    assert stream.text == text


def tail(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    """`genq tail` with its output as bytes: piped, stdout is exactly the job's text."""
    return subprocess.run(
        [str(GENQ), "tail", *args],
        env={**os.environ, **env},
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_tail_skips_entries_that_do_not_validate_and_prints_the_text(
    genq_env: dict[str, str], spoiled: tuple[str, str, list[str]]
) -> None:
    job_id, text, bad = spoiled
    proc = tail(genq_env, job_id)
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    assert proc.stdout.decode() == text
    assert f"{len(bad)} invalid stream entries skipped" in stderr
    assert all(entry_id in stderr for entry_id in bad)
    assert "Traceback" not in stderr and "invalid settings" not in stderr


def test_tail_json_prints_only_the_valid_frames(
    genq_env: dict[str, str], spoiled: tuple[str, str, list[str]]
) -> None:
    job_id, text, bad = spoiled
    proc = tail(genq_env, job_id, "--json")
    assert proc.returncode == 0, proc.stderr.decode()
    frames = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert frames[-1]["type"] == "done" and frames[-1]["data"]["text"] == text
    assert not {f"{f['epoch']}-{f['seq']}" for f in frames} & set(bad)


def test_a_stream_key_of_the_wrong_type_is_a_clear_error(
    client: Client, genq_env: dict[str, str], redis_client: redis.Redis
) -> None:
    job = client.submit(**{**JOB, "max_tokens": 4})
    job.result(timeout=60)
    # Raw writes on purpose: a key of a type genq never gives it.
    redis_client.delete(streams.stream_key(client.keys, job.job_id))
    redis_client.set(streams.stream_key(client.keys, job.job_id), "not a stream")
    with pytest.raises(GenqError, match="WRONGTYPE"):
        client.job(job.job_id).result(timeout=30)
    proc = tail(genq_env, job.job_id)
    stderr = proc.stderr.decode()
    assert proc.returncode == 1 and "Redis refused a read: WRONGTYPE" in stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
