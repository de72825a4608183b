"""genq.common.keys: Redis key names and job ids."""

from __future__ import annotations

import re
from collections.abc import Callable
from fnmatch import fnmatchcase

import pytest

from genq.common.errors import InvalidJob
from genq.common.ids import check_job_id, new_job_id
from genq.common.store.keys import Keys

JOB = "0123456789abcdef0123456789abcdef"

PER_JOB: dict[str, Callable[[Keys, str], str]] = {
    "tokens": Keys.tokens,
    "stream": Keys.stream,
    "checkpoint": Keys.checkpoint,
    "job": Keys.job,
    "cancel": Keys.cancel,
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
    assert keys.leases == "staging:leases"
    assert keys.batch("b1") == "staging:batch:{b1}"
    assert keys.batch_jobs("b1") == "staging:batch:{b1}:jobs"
    assert keys.expiries == "staging:expiries"
    assert keys.tokens_pattern().startswith("staging:")


def test_worker_presence_keys_share_one_hash_tag_and_are_not_job_channels() -> None:
    keys = Keys("staging")
    assert keys.workers == "staging:{workers}"
    assert keys.worker("genq@host") == "staging:{workers}:genq@host"
    assert not fnmatchcase(keys.worker("genq@host"), keys.tokens_pattern())


def test_tokens_pattern_matches_every_job_channel_and_nothing_else() -> None:
    keys = Keys()
    pattern = keys.tokens_pattern()
    assert fnmatchcase(keys.tokens(JOB), pattern)
    assert fnmatchcase(keys.tokens(new_job_id()), pattern)
    assert not fnmatchcase(keys.stream(JOB), pattern)
    assert not fnmatchcase(Keys("other").tokens(JOB), pattern)


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
