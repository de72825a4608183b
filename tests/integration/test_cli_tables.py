"""The `genq` tables never cut a name, a queue or an id short: on a wide terminal a table, on
a narrow one each record as `column value` lines, piped one record per line; `--json` stays.

Narrow terminals are real ones: the CLI runs with its stdout on a pseudo-terminal of that size.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import socket
import struct
import subprocess
import termios
from pathlib import Path

import pytest

from genq import Client
from genq.producer.cli.registry import MODEL_COLUMNS
from ops.localstack import Worker

from .support import GENQ, run_genq

# A name too long for the columns of a narrow terminal, so that nothing fits by luck.
LONG_NAME = "a-remote-model-with-a-name-longer-than-forty-columns"
STYLE = re.compile(r"\x1b\[[0-9;]*m")  # what a terminal gets for bold, not part of the text


def on_terminal(env: dict[str, str], *args: str, columns: int) -> str:
    """The CLI's stdout on a terminal `columns` wide, without its bold."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    environ = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    with subprocess.Popen(
        [str(GENQ), *args], env={**environ, **env}, stdout=follower, stderr=subprocess.PIPE
    ) as proc:
        os.close(follower)
        output = read_until_closed(leader)
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    return STYLE.sub("", output.decode()).replace("\r\n", "\n")


def read_until_closed(leader: int) -> bytes:
    """Everything written to the terminal, until its last writer closed it (EIO on Linux)."""
    chunks = []
    try:
        while chunk := os.read(leader, 65536):
            chunks.append(chunk)
    except OSError:
        pass
    finally:
        os.close(leader)
    return b"".join(chunks)


def fields(output: str, name: str) -> list[str]:
    """The values of one field in `column value` records, in order."""
    return re.findall(rf"^{re.escape(name)} +(\S.*)$", output, flags=re.MULTILINE)


@pytest.fixture
def models_env(genq_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The session's registry (tiny, broken, gemma) and a remote model with a long name."""
    registry = Path(genq_env["GENQ_MODELS_FILE"]).read_text()
    registry += f'\n[models.{LONG_NAME}]\nbackend = "remote"\nbase_url = "http://gpu-box:8000/v1"\n'
    path = tmp_path / "models.toml"
    path.write_text(registry)
    return {**genq_env, "GENQ_MODELS_FILE": str(path)}


def listed(env: dict[str, str]) -> list[dict[str, str]]:
    proc = run_genq(env, "models", "--json")
    assert proc.returncode == 0, proc.stderr
    rows: list[dict[str, str]] = json.loads(proc.stdout)
    assert LONG_NAME in {row["name"] for row in rows}
    return rows


@pytest.mark.parametrize("columns", [80, 40])
def test_models_on_a_narrow_terminal_shows_every_name_and_queue_whole(
    models_env: dict[str, str], columns: int
) -> None:
    rows = listed(models_env)
    output = on_terminal(models_env, "models", columns=columns)
    assert fields(output, "name") == [row["name"] for row in rows]
    assert fields(output, "queue") == [row["queue"] for row in rows]
    assert "…" not in output


def test_models_on_a_wide_terminal_is_a_table_of_whole_names_and_queues(
    models_env: dict[str, str],
) -> None:
    rows = listed(models_env)
    output = on_terminal(models_env, "models", columns=400)
    cells = [line.split("│")[1:-1] for line in output.splitlines() if line.startswith("│")]
    assert [cell[0].strip() for cell in cells] == [row["name"] for row in rows]
    assert [cell[3].strip() for cell in cells] == [row["queue"] for row in rows]


@pytest.mark.parametrize("columns", ["80", "40"])
def test_models_piped_prints_one_whole_record_per_line(
    models_env: dict[str, str], columns: str
) -> None:
    rows = listed(models_env)
    proc = run_genq({**models_env, "COLUMNS": columns}, "models")
    assert proc.returncode == 0, proc.stderr
    header, *lines = proc.stdout.splitlines()
    assert re.split(" {2,}", header) == list(MODEL_COLUMNS)
    assert [line.split()[0] for line in lines] == [row["name"] for row in rows]
    assert [line.split()[3] for line in lines] == [row["queue"] for row in rows]
    assert "http://gpu-box:8000/v1" in lines[0]  # sorted: the long remote name comes first


def test_workers_on_a_narrow_terminal_and_piped_shows_the_host_name_and_models_whole(
    genq_env: dict[str, str], worker: Worker
) -> None:
    found = json.loads(run_genq(genq_env, "workers", "--json").stdout)
    names = [info["name"] for info in found]
    models = [", ".join(info["models"]) for info in found]
    # The session's Redis is on loopback: every worker reaches it from there.
    hosts = [f"{socket.gethostname()} (127.0.0.1)"] * len(found)
    output = on_terminal(genq_env, "workers", columns=40)
    shown = (fields(output, "host"), fields(output, "name"), fields(output, "models"))
    assert shown == (hosts, names, models)
    piped = run_genq({**genq_env, "COLUMNS": "40"}, "workers").stdout.splitlines()
    assert re.split(" {2,}", piped[0]) == ["host", "name", "device", "models", "last seen"]
    rows = [re.split(" {2,}", line) for line in piped[1:]]
    assert [(row[0], row[1], row[3]) for row in rows] == list(
        zip(hosts, names, models, strict=True)
    )


def test_status_on_a_narrow_terminal_shows_the_job_id_and_worker_whole(
    genq_env: dict[str, str], client: Client
) -> None:
    job = client.submit("Once", max_tokens=2, seed=1)
    job.result(timeout=60)
    record = json.loads(run_genq(genq_env, "status", job.job_id, "--json").stdout)
    output = on_terminal(genq_env, "status", job.job_id, columns=40)
    assert fields(output, "job") == [job.job_id]
    (attempts,) = fields(output, "attempts")
    assert attempts.endswith(f" {record['worker']}")
