"""What the llama-server peer is started with and what its clients ask (no server here)."""

from __future__ import annotations

from pathlib import Path

from genq.common.registry import LlamaModelConfig
from genq.common.schemas import JobSpec
from ops.bench.paths import request_body
from ops.llamaserver import LlamaCppServer


def test_each_slot_gets_the_workers_context_threads_and_batch(tmp_path: Path) -> None:
    config = LlamaModelConfig(path=tmp_path / "m.gguf", n_ctx=2048, n_threads=2, n_batch=256)
    server = LlamaCppServer(
        tmp_path / "m.gguf", config, tmp_path / "log", binary=Path("/x/llama-server"), parallel=8
    )
    args = server.command()
    opts = dict(zip(args[1::2], args[2::2], strict=True))
    assert args[0] == "/x/llama-server"
    assert opts["-m"] == str(tmp_path / "m.gguf")
    assert (opts["-np"], opts["-c"], opts["-t"], opts["-b"]) == ("8", "16384", "2", "256")
    assert opts["--host"] == "127.0.0.1"
    assert str(tmp_path) not in server.command_line()


def test_a_peer_without_eos_to_ban_is_asked_to_ignore_it_with_the_jobs_sampling() -> None:
    spec = JobSpec(model="m", prompt="p", temperature=0.5, seed=7, max_tokens=100)
    body = request_body(spec, None)
    assert body["ignore_eos"] and body["stream"]
    assert (body["prompt"], body["seed"], body["max_tokens"], body["temperature"]) == (
        "p",
        7,
        100,
        0.5,
    )


def test_a_peer_without_ignore_eos_gets_eos_banned_by_its_bias() -> None:
    body = request_body(JobSpec(model="m", prompt="p"), 2)
    assert body["logit_bias"] == {"2": float("-inf")} and "ignore_eos" not in body
