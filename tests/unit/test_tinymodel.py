"""Tests for the built-in tiny GGUF model (gguf-level only, no llama_cpp)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import gguf
import pytest

from genq.common import tinymodel
from genq.common.tinymodel import (
    TINY_MODEL_VERSION,
    TINY_N_CTX,
    ensure_tiny_model,
    tiny_model_path,
    write_tiny_model,
)

ARCH = "llama"


def _field(reader: gguf.GGUFReader, key: str) -> Any:
    field = reader.get_field(key)
    assert field is not None, f"missing GGUF key {key}"
    return field.contents()


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> gguf.GGUFReader:
    path = write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf")
    return gguf.GGUFReader(path)


def test_same_seed_writes_identical_bytes(tmp_path: Path) -> None:
    a = write_tiny_model(tmp_path / "a.gguf", seed=3)
    b = write_tiny_model(tmp_path / "b.gguf", seed=3)
    assert a.read_bytes() == b.read_bytes()


def test_different_seed_writes_different_bytes(tmp_path: Path) -> None:
    a = write_tiny_model(tmp_path / "a.gguf", seed=0)
    b = write_tiny_model(tmp_path / "b.gguf", seed=1)
    assert a.stat().st_size == b.stat().st_size
    assert a.read_bytes() != b.read_bytes()


def test_write_creates_parent_dirs_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "x" / "y" / "tiny.gguf"
    assert write_tiny_model(target) == target
    assert 100_000 < target.stat().st_size < 2_000_000
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny.gguf"]


def test_failed_write_keeps_existing_file_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = write_tiny_model(tmp_path / "tiny.gguf")
    before = target.read_bytes()

    def boom(path: Path, seed: int) -> None:
        path.write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(tinymodel, "_write_gguf", boom)
    with pytest.raises(OSError, match="disk full"):
        write_tiny_model(target, seed=1)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.gguf"]


def test_tiny_model_path_encodes_version_and_seed(tmp_path: Path) -> None:
    path = tiny_model_path(tmp_path, seed=7)
    assert path == tmp_path / f"tiny-v{TINY_MODEL_VERSION}-s7.gguf"
    assert tiny_model_path(tmp_path) != path


def test_ensure_creates_once_then_reuses(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = ensure_tiny_model(cache, seed=2)
    assert first == tiny_model_path(cache, seed=2)
    assert first.is_file()
    # Backdate so any rewrite would show up even with coarse mtime resolution.
    os.utime(first, ns=(1_000_000_000, 1_000_000_000))
    before = first.stat()

    second = ensure_tiny_model(cache, seed=2)
    after = second.stat()
    assert second == first
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_concurrent_ensure_yields_one_complete_file(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with ThreadPoolExecutor(max_workers=4) as pool:
        paths = set(pool.map(lambda _: ensure_tiny_model(cache), range(8)))
    assert paths == {tiny_model_path(cache)}
    assert [p.name for p in cache.iterdir()] == [tiny_model_path(cache).name]
    expected = write_tiny_model(tmp_path / "ref.gguf").read_bytes()
    assert tiny_model_path(cache).read_bytes() == expected


def test_ensure_writes_the_same_bytes_as_write(tmp_path: Path) -> None:
    cached = ensure_tiny_model(tmp_path / "cache", seed=5)
    direct = write_tiny_model(tmp_path / "direct.gguf", seed=5)
    assert cached.read_bytes() == direct.read_bytes()


def test_gguf_header_metadata(reader: gguf.GGUFReader) -> None:
    keys = gguf.Keys
    assert _field(reader, keys.General.ARCHITECTURE) == ARCH
    assert _field(reader, keys.General.NAME) == "genq-tiny"
    assert _field(reader, keys.LLM.CONTEXT_LENGTH.format(arch=ARCH)) == TINY_N_CTX
    assert _field(reader, keys.Tokenizer.MODEL) == "llama"
    assert _field(reader, keys.Tokenizer.BOS_ID) == 1
    assert _field(reader, keys.Tokenizer.EOS_ID) == 2
    assert _field(reader, keys.Tokenizer.UNK_ID) == 0
    assert _field(reader, keys.Tokenizer.ADD_BOS) is True
    assert _field(reader, keys.Tokenizer.ADD_EOS) is False


def test_chat_template_is_jinja_over_messages(reader: gguf.GGUFReader) -> None:
    template = _field(reader, gguf.Keys.Tokenizer.CHAT_TEMPLATE)
    assert "for message in messages" in template
    assert "message['content']" in template
    assert "add_generation_prompt" in template


def test_vocab_size_matches_embedding_and_output(reader: gguf.GGUFReader) -> None:
    tokens = _field(reader, gguf.Keys.Tokenizer.LIST)
    scores = _field(reader, gguf.Keys.Tokenizer.SCORES)
    types = _field(reader, gguf.Keys.Tokenizer.TOKEN_TYPE)
    assert len(tokens) == len(scores) == len(types) > 256 + 3
    assert len(set(tokens)) == len(tokens)
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}
    # GGUF stores shapes innermost-first: (n_embd, n_vocab).
    assert shapes["token_embd.weight"] == (64, len(tokens))
    assert shapes["output.weight"] == (64, len(tokens))


def test_vocab_has_special_then_256_byte_tokens(reader: gguf.GGUFReader) -> None:
    tokens = _field(reader, gguf.Keys.Tokenizer.LIST)
    types = _field(reader, gguf.Keys.Tokenizer.TOKEN_TYPE)
    tt = gguf.TokenType
    assert tokens[:3] == ["<unk>", "<s>", "</s>"]
    assert types[:3] == [tt.UNKNOWN, tt.CONTROL, tt.CONTROL]
    byte_ids = [i for i, kind in enumerate(types) if kind == tt.BYTE]
    assert [tokens[i] for i in byte_ids] == [f"<0x{b:02X}>" for b in range(256)]


def test_vocab_has_whole_multibyte_pieces(reader: gguf.GGUFReader) -> None:
    tokens = _field(reader, gguf.Keys.Tokenizer.LIST)
    types = _field(reader, gguf.Keys.Tokenizer.TOKEN_TYPE)
    normal = {tok for tok, kind in zip(tokens, types, strict=True) if kind == gguf.TokenType.NORMAL}
    assert {"▁", "▁the", "日本", "€", "😀", "▁über"} <= normal
    assert "ö" not in normal  # must fall back to byte tokens


def test_tensors_cover_every_llama_block(reader: gguf.GGUFReader) -> None:
    names = {t.name for t in reader.tensors}
    per_block = [
        "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
        "ffn_norm", "ffn_gate", "ffn_up", "ffn_down",
    ]  # fmt: skip
    expected = {"token_embd.weight", "output_norm.weight", "output.weight"}
    expected |= {f"blk.{b}.{n}.weight" for b in range(2) for n in per_block}
    assert names == expected
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in reader.tensors)
