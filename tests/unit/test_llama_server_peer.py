"""What the llama-server peer is started with and what its clients ask (no server here)."""

from __future__ import annotations

from pathlib import Path

from genq.common.registry import LlamaModelConfig
from genq.common.schemas import JobSpec
from genq.common.tinymodel import write_tiny_model
from ops.bench.paths import request_body
from ops.llamaserver import LlamaCppServer


def options(model: Path, n_ctx: int, parallel: int = 1) -> dict[str, str]:
    """The options llama-server is started with, for the worker's `n_ctx`, by name."""
    config = LlamaModelConfig(path=model, n_ctx=n_ctx, n_threads=2, n_batch=256)
    server = LlamaCppServer(
        model, config, model.parent / "log", binary=Path("/x/llama-server"), parallel=parallel
    )
    args = server.command()
    assert args[0] == "/x/llama-server"
    assert str(model.parent) not in server.command_line()
    return dict(zip(args[1::2], args[2::2], strict=True))


def test_each_slot_gets_the_workers_context_threads_and_batch(tmp_path: Path) -> None:
    tiny = write_tiny_model(tmp_path / "m.gguf")
    opts = options(tiny, 2048, parallel=8)
    assert opts["-m"] == str(tiny)
    assert (opts["-np"], opts["-c"], opts["-t"], opts["-b"]) == ("8", "16384", "2", "256")
    assert opts["--host"] == "127.0.0.1"


def test_a_slot_runs_the_workers_context_past_the_models_training_context(
    tmp_path: Path,
) -> None:
    """llama-server would cap each slot at the tiny model's training context, 256."""
    tiny = write_tiny_model(tmp_path / "m.gguf")
    assert options(tiny, 2304)["--override-kv"] == "llama.context_length=int:2304"
    assert "--override-kv" not in options(tiny, 256)


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
