"""Every `genq` command that reads or writes Redis answers an outage with one clear line on
stderr (what it could not reach, the password masked) and exit code 1: no traceback, nothing
on stdout. The launchers (`genq worker`, `genq relay`, `genq flower`) are services that wait
for Redis instead, and are not covered here.

No Redis is started: GENQ_REDIS_URL points at a loopback port held bound and never
listening, so every connection is refused at once, and GENQ_REDIS_RETRY_S=0 makes the
readers give up at the first failure instead of riding out the blip."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .support import run_genq

PASSWORD = "s3cret-pw"
JOB_ID = "0123456789abcdef0123456789abcdef"
BATCH_ID = "nightly-42"

# Every command that touches Redis, both lookups of those that take a job or a batch id, and
# the --json forms (an error must not become half a JSON document on stdout).
COMMANDS = {
    "run": ["run", "Once upon a time", "-n", "4"],
    "tail": ["tail", JOB_ID],
    "status-job": ["status", JOB_ID],
    "status-batch": ["status", BATCH_ID],
    "status-json": ["status", JOB_ID, "--json"],
    "cancel-job": ["cancel", JOB_ID],
    "cancel-batch": ["cancel", BATCH_ID],
    "submit": ["submit", "{batch_file}"],
    "wait": ["wait", BATCH_ID],
    "results": ["results", BATCH_ID],
    "workers": ["workers"],
    "workers-json": ["workers", "--json"],
}


@pytest.fixture(scope="module")
def closed_port() -> Iterator[int]:
    """A loopback port bound by this test and never listened on: connections are refused,
    and no other process can take the port meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


@pytest.fixture(scope="module")
def down_env(genq_env: dict[str, str], closed_port: int) -> dict[str, str]:
    return {
        **genq_env,
        "GENQ_REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{closed_port}/0",
        "GENQ_REDIS_RETRY_S": "0",
    }


@pytest.fixture(scope="module")
def batch_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("batch") / "prompts.jsonl"
    path.write_text('{"custom_id": "q1", "prompt": "Once upon a time", "max_tokens": 4}\n')
    return path


@pytest.fixture(scope="module")
def outcomes(
    down_env: dict[str, str], batch_file: Path
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every command of COMMANDS, run at once (each start costs a second or two of CPU)."""

    def run(args: list[str]) -> subprocess.CompletedProcess[str]:
        return run_genq(down_env, *(arg.format(batch_file=batch_file) for arg in args))

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return dict(zip(COMMANDS, pool.map(run, COMMANDS.values()), strict=True))


def expected_line(port: int) -> re.Pattern[str]:
    masked = re.escape(f"redis://:***@127.0.0.1:{port}/0")
    return re.compile(f"genq: error: cannot reach Redis at {masked}: .+")


@pytest.mark.parametrize("case", COMMANDS)
def test_command_answers_a_redis_outage_with_one_line_and_exit_1(
    outcomes: dict[str, subprocess.CompletedProcess[str]], closed_port: int, case: str
) -> None:
    proc = outcomes[case]
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert expected_line(closed_port).fullmatch(lines[0]), lines[0]
    assert PASSWORD not in proc.stderr + proc.stdout
    assert proc.stdout == ""


def test_redis_url_option_is_masked_in_the_outage_line_too(
    down_env: dict[str, str], closed_port: int
) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{closed_port}/0"
    env = {**down_env, "GENQ_REDIS_URL": "redis://127.0.0.1:1/0"}  # the option wins
    proc = run_genq(env, "--redis-url", url, "status", BATCH_ID)
    assert proc.returncode == 1, proc.stderr
    [line] = proc.stderr.splitlines()
    assert expected_line(closed_port).fullmatch(line), line
    assert PASSWORD not in proc.stderr + proc.stdout
