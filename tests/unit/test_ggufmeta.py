"""genq.common.ggufmeta: whether a GGUF file's metadata has a key, and its vocabulary, read without
loading it."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from genq.common.ggufmeta import (
    TrainingContext,
    Vocabulary,
    has_key,
    training_context,
    vocabulary,
)
from genq.common.tinymodel import write_tiny_model

TEMPLATE = "tokenizer.chat_template"


def metadata_only(path: Path, **strings: str) -> Path:
    """A GGUF file with string keys, an array of strings and no tensors."""
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_array("tokenizer.ggml.tokens", ["a", "bb", "ccc"])
    for key, value in strings.items():
        writer.add_string(key.replace("__", "."), value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_key_after_arrays_of_strings_and_numbers_is_found(tmp_path: Path) -> None:
    tiny = write_tiny_model(tmp_path / "tiny.gguf")  # tokens, scores and types precede it
    assert has_key(tiny, TEMPLATE)
    assert has_key(tiny, "general.name")


def test_a_missing_key_is_not_found(tmp_path: Path) -> None:
    path = metadata_only(tmp_path / "m.gguf", general__name="no template")
    assert has_key(path, "general.name")
    assert not has_key(path, TEMPLATE)


@pytest.mark.parametrize("content", [b"", b"GGUF", b"not a model at all, just text here"])
def test_a_file_that_is_not_gguf_raises_value_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.gguf"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a GGUF file"):
        has_key(path, TEMPLATE)


def test_a_gguf_file_cut_short_raises_value_error(tmp_path: Path) -> None:
    whole = write_tiny_model(tmp_path / "tiny.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[:2000])  # inside the token list
    with pytest.raises(ValueError, match="cut short"):
        has_key(cut, TEMPLATE)


def test_the_vocabulary_is_the_token_lists_size_and_longest_spelling(tmp_path: Path) -> None:
    assert vocabulary(metadata_only(tmp_path / "m.gguf")) == Vocabulary(size=3, longest=3)
    # tiny: 3 specials, 256 byte tokens, 17 pieces; the longest is "▁über" (3 + 2 + 3 bytes).
    assert vocabulary(write_tiny_model(tmp_path / "tiny.gguf")) == Vocabulary(276, 8)


def test_a_file_without_a_token_list_has_no_vocabulary(tmp_path: Path) -> None:
    writer = gguf.GGUFWriter(tmp_path / "bare.gguf", "llama")
    writer.add_string("general.name", "no tokens")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert vocabulary(tmp_path / "bare.gguf") is None


def test_a_token_list_cut_short_raises_value_error(tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(write_tiny_model(tmp_path / "tiny.gguf").read_bytes()[:2000])
    with pytest.raises(ValueError, match="cut short"):
        vocabulary(cut)


def test_the_training_context_is_read_under_the_files_architecture(tmp_path: Path) -> None:
    tiny = write_tiny_model(tmp_path / "tiny.gguf")
    assert training_context(tiny) == TrainingContext("llama.context_length", 256)
    assert training_context(metadata_only(tmp_path / "m.gguf")) is None  # no context length
