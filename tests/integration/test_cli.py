"""The `genq` command line, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from genq.common import gemma
from genq.common.store.keys import Keys
from ops.localstack import Worker, settings_for
from tests.state import job_record

from .support import GENQ, run_genq

COMMANDS = ["run", "worker", "models", "make-tiny-model"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself_in_help(command: str) -> None:
    proc = subprocess.run(
        [str(GENQ), command, "--help"], capture_output=True, text=True, check=True
    )
    assert proc.stdout.startswith("Usage: genq")
    assert len(proc.stdout.splitlines()) > 4


def test_run_prints_tokens_then_a_summary(genq_env: dict[str, str], worker: Worker) -> None:
    proc = run_genq(genq_env, "run", "Hello", "-n", "30", "--seed", "4", "--ignore-eos")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout) > 1  # piped: the text exactly, no newline added
    assert "30 tokens" in proc.stderr and "first token" in proc.stderr and "tok/s" in proc.stderr


def test_run_json_prints_one_frame_per_line_ending_with_done(
    genq_env: dict[str, str], worker: Worker
) -> None:
    proc = run_genq(genq_env, "run", "Hello", "-n", "25", "--seed", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    frames = [json.loads(line) for line in proc.stdout.splitlines()]
    assert frames[-1]["type"] == "done"
    assert {f["type"] for f in frames[:-1]} == {"token", "continuation", "window"}
    text = "".join(f["data"]["text"] for f in frames[:-1] if f["type"] == "token")
    assert text == frames[-1]["data"]["text"]


def test_run_as_chat_uses_messages(genq_env: dict[str, str], worker: Worker) -> None:
    plain = run_genq(genq_env, "run", "Hi", "-n", "3", "--json")
    chat = run_genq(genq_env, "run", "Hi", "-n", "3", "--json", "--chat", "--system", "terse")

    def prompt_tokens(proc: subprocess.CompletedProcess[str]) -> int:
        return int(json.loads(proc.stdout.splitlines()[-1])["data"]["usage"]["prompt_tokens"])

    assert prompt_tokens(chat) > prompt_tokens(plain)


def test_models_lists_tiny_and_registry_entries(genq_env: dict[str, str]) -> None:
    proc = run_genq(genq_env, "models", "--json")
    assert proc.returncode == 0, proc.stderr
    names = {row["name"]: row for row in json.loads(proc.stdout)}
    assert set(names) == {"tiny", "broken", "gemma-3-270m"}  # gemma: installed or not
    assert names["gemma-3-270m"]["installed"] == gemma.installed()
    # How a chat is rendered: the file's template, or a transcript where there is none.
    assert names["tiny"]["chat"] == "template"
    assert names["gemma-3-270m"]["chat"] == ("transcript" if gemma.installed() else None)
    assert names["broken"]["chat"] is None  # its file cannot be read
    assert names["tiny"]["n_ctx"] == 256 and names["tiny"]["device"] == "cpu"


def test_models_lists_a_remote_model_with_its_server_and_no_password(
    genq_env: dict[str, str], tmp_path: Path
) -> None:
    registry = tmp_path / "models.toml"
    registry.write_text(
        '[models.far]\nbackend = "remote"\nbase_url = "http://u:hunter2@gpu-box:8000/v1"\n'
        'api_key_env = "FAR_KEY"\n'
    )
    env = {**genq_env, "GENQ_MODELS_FILE": str(registry), "COLUMNS": "200"}
    listed = run_genq(env, "models", "--json")
    assert listed.returncode == 0, listed.stderr
    far = {row["name"]: row for row in json.loads(listed.stdout)}["far"]
    assert (far["backend"], far["queue"]) == ("remote", "cpu.far")
    assert far["base_url"] == "http://u:***@gpu-box:8000/v1"
    table = run_genq(env, "models")
    assert table.returncode == 0, table.stderr
    assert "http://u:***@gpu-box:8000/v1" in table.stdout and "cpu.far" in table.stdout
    assert "hunter2" not in listed.stdout + table.stdout


def test_models_names_the_file_and_entry_of_a_bad_registry(
    genq_env: dict[str, str], tmp_path: Path
) -> None:
    bad = tmp_path / "models.toml"
    bad.write_text('[models.big]\nbackend = "vllm"\npath = "/x.gguf"\n')
    proc = run_genq({**genq_env, "GENQ_MODELS_FILE": str(bad)}, "models")
    assert proc.returncode == 1
    assert str(bad) in proc.stderr and "[models.big]" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_make_tiny_model_writes_the_same_bytes_for_the_same_seed(tmp_path: Path) -> None:
    for name in ("a.gguf", "b.gguf"):
        proc = run_genq({}, "make-tiny-model", str(tmp_path / name), "--seed", "3")
        assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()
    assert (tmp_path / "a.gguf").read_bytes()[:4] == b"GGUF"


def test_plain_celery_command_loads_the_app() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "genq.workers.app", "inspect", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_run_takes_every_job_field_a_terminal_user_may_want(
    genq_env: dict[str, str], worker: Worker, redis_client: redis.Redis
) -> None:
    options = ["--ignore-eos", "--window-tokens", "2", "--max-windows", "2", "--logprobs", "1"]
    options += ["--min-p", "0.1", "--repeat-penalty", "1.1", "--priority", "7"]
    proc = run_genq(genq_env, "run", "Hi", "-n", "50", "--json", *options, "--expires-in", "10m")
    assert proc.returncode == 0, proc.stderr
    frames = [json.loads(line) for line in proc.stdout.splitlines()]
    done = frames[-1]
    assert (done["data"]["usage"]["completion_tokens"], done["data"]["finish_reason"]) == (
        4,  # two windows of two tokens, end-of-sequence ignored
        "length",
    )
    tokens = [f for f in frames if f["type"] == "token"]
    assert all(len(f["data"]["logprobs"][0]["top"]) == 1 for f in tokens)
    keys = Keys(settings_for(genq_env).key_prefix)
    record = job_record(redis_client, keys, done["job_id"])
    spec = record.spec
    assert (spec.ignore_eos, spec.window_tokens, spec.max_windows, spec.logprobs) == (
        True,
        2,
        2,
        1,
    )
    assert (spec.min_p, spec.repeat_penalty, record.priority) == (0.1, 1.1, 7)
    assert 590_000 <= record.expires_ms - record.submitted_ms <= 600_000
