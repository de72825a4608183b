"""Redis key names (each the store module's that uses it) and job ids (genq.common.ids)."""

from __future__ import annotations

import re
from collections.abc import Callable
from fnmatch import fnmatchcase

import pytest

from genq.common.errors import InvalidJob
from genq.common.ids import check_job_id, new_job_id
from genq.common.store import batches, gateway, indexes, jobs, presence, streams
from genq.common.store.keys import Keys

JOB = "0123456789abcdef0123456789abcdef"

PER_JOB: dict[str, Callable[[Keys, str], str]] = {
    "tokens": streams.channel,
    "stream": streams.stream_key,
    "checkpoint": streams.checkpoint_key,
    "job": jobs.record_key,
    "cancel": jobs.cancel_key,
    "gateway": gateway.meta_key,
}


@pytest.mark.parametrize("kind", PER_JOB)
def test_per_job_key_carries_the_job_id_in_a_hash_tag(kind: str) -> None:
    key = PER_JOB[kind](Keys(), JOB)
    assert key.startswith(f"genq:{{{JOB}}}:")
    # Redis Cluster hashes only the text between the first "{" and the next "}".
    tag = re.search(r"\{(.*?)\}", key)
    assert tag is not None
    assert tag[1] == JOB


def test_per_job_keys_are_distinct() -> None:
    keys = Keys()
    names = [make(keys, JOB) for make in PER_JOB.values()]
    assert len(set(names)) == len(names)


def test_keys_of_different_jobs_differ() -> None:
    other = "f" * 32
    assert all(make(Keys(), JOB) != make(Keys(), other) for make in PER_JOB.values())


@pytest.mark.parametrize("kind", PER_JOB)
def test_prefix_is_honoured_for_per_job_keys(kind: str) -> None:
    assert PER_JOB[kind](Keys("staging"), JOB).startswith(f"staging:{{{JOB}}}:")


def test_prefix_is_honoured_for_shared_keys() -> None:
    keys = Keys("staging")
    assert indexes.leases_key(keys) == "staging:leases"
    assert batches.record_key(keys, "b1") == "staging:batch:{b1}"
    assert batches.jobs_key(keys, "b1") == "staging:batch:{b1}:jobs"
    assert indexes.expiries_key(keys) == "staging:expiries"
    assert streams.channel_pattern(keys).startswith("staging:")


def test_worker_presence_keys_share_one_hash_tag_and_are_not_job_channels() -> None:
    keys = Keys("staging")
    assert presence.workers_key(keys) == "staging:{workers}"
    assert presence.worker_key(keys, "genq@host") == "staging:{workers}:genq@host"
    assert not fnmatchcase(presence.worker_key(keys, "genq@host"), streams.channel_pattern(keys))


def test_tokens_pattern_matches_every_job_channel_and_nothing_else() -> None:
    keys = Keys()
    pattern = streams.channel_pattern(keys)
    assert fnmatchcase(streams.channel(keys, JOB), pattern)
    assert fnmatchcase(streams.channel(keys, new_job_id()), pattern)
    assert not fnmatchcase(streams.stream_key(keys, JOB), pattern)
    assert not fnmatchcase(streams.channel(Keys("other"), JOB), pattern)


def test_new_job_id_is_32_lowercase_hex_digits() -> None:
    job_id = new_job_id()
    assert re.fullmatch(r"[0-9a-f]{32}", job_id)
    assert check_job_id(job_id) == job_id


def test_new_job_ids_do_not_repeat() -> None:
    assert len({new_job_id() for _ in range(10_000)}) == 10_000


def test_check_job_id_returns_a_valid_id() -> None:
    assert check_job_id(JOB) == JOB


@pytest.mark.parametrize(
    "job_id",
    ["", "*", "abc}", "{" + JOB[:30] + "}", JOB.upper(), JOB[:31], JOB + "0", JOB[:31] + "g",
     JOB + "\n", " " + JOB[1:], "genq:" + JOB],
)  # fmt: skip
def test_check_job_id_rejects_anything_else(job_id: str) -> None:
    with pytest.raises(InvalidJob, match="not a genq job id") as caught:
        check_job_id(job_id)
    assert repr(job_id) in str(caught.value)
