"""What the llama-server peer is started with and what its clients ask (no server here)."""

from __future__ import annotations

import json
from pathlib import Path

from genq.common.registry import LlamaModelConfig
from genq.common.schemas import JobSpec
from ops.bench.llama_server_peer import LlamaCppServer, PeerJob, sampling


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


def test_clients_cycle_the_prompts_with_a_seed_each_and_ignore_eos() -> None:
    params = sampling(JobSpec(model="m", prompt="p", temperature=0.5))
    bodies = [json.loads(b) for b in PeerJob(["a", "b"], 100, 7, params).bodies(3)]
    assert [b["prompt"] for b in bodies] == ["a", "b", "a"]
    assert [b["seed"] for b in bodies] == [7, 8, 9]
    assert all(b["ignore_eos"] and b["stream"] and b["max_tokens"] == 100 for b in bodies)
    assert all(b["temperature"] == 0.5 for b in bodies)
