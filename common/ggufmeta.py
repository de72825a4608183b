"""What a GGUF file's metadata says, read without loading the model: whether it holds a key,
the size of its vocabulary, and the context it was trained with.

`genq models` asks whether each model's file has a chat template, and a producer checks a
job's `logit_bias` ids and the length of its prompt against the model's vocabulary (see
common/prompts.py). llama-cpp-python's vocabulary-only load takes seconds on gemma-3-270m's
262,144-token vocabulary, and `gguf.GGUFReader` half a minute; this walks the key-value
section alone (about 0.2 s).
Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (little-endian, version 2+).
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

TOKENS_KEY = "tokenizer.ggml.tokens"  # the vocabulary: an array of strings, by token id
ARCHITECTURE_KEY = "general.architecture"  # its value names the keys of the model's shape
_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # by type id
_INTEGERS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 10: "<Q", 11: "<q"}
_STRING, _ARRAY = 8, 9
_HEADER = struct.Struct("<4sIQQ")  # magic, version, tensor count, key-value count


@dataclass(frozen=True)
class TrainingContext:
    """The context a model was trained with, and the key that says it."""

    key: str  # `<architecture>.context_length`
    length: int  # tokens


@dataclass(frozen=True)
class Vocabulary:
    """A model's vocabulary, as its file spells it."""

    size: int  # tokens: ids run from 0 to size - 1
    # Bytes of the longest token's text. No token stands for more bytes of a prompt: the file
    # spells a token with at least the bytes it covers (SentencePiece writes a space as the
    # 3-byte "▁", byte-level BPE a byte as a character of 1 or 2 bytes, a byte token as <0xNN>).
    longest: int


def has_key(path: Path, key: str) -> bool:
    """True if the file's metadata has `key`; ValueError for a file that is not GGUF v2+ (or
    is cut short)."""
    with _metadata(path) as (data, n_kv):
        return _value_at(data, n_kv, key.encode()) is not None


def vocabulary(path: Path) -> Vocabulary | None:
    """The file's vocabulary (None when it has no token list); ValueError as `has_key`."""
    with _metadata(path) as (data, n_kv):
        pos = _value_at(data, n_kv, TOKENS_KEY.encode())
        if pos is None or _u32(data, pos) != _ARRAY or _u32(data, pos + 4) != _STRING:
            return None
        count, pos, longest = _u64(data, pos + 8), pos + 16, 1
        for _ in range(count):
            length = _u64(data, pos)
            longest, pos = max(longest, length), pos + 8 + length
        if pos > len(data):
            raise struct.error("the token list runs past the end of the file")
        return Vocabulary(count, longest)


def training_context(path: Path) -> TrainingContext | None:
    """The file's training context (None when it names no architecture, or the architecture
    no context length); ValueError as `has_key`."""
    with _metadata(path) as (data, n_kv):
        pos = _value_at(data, n_kv, ARCHITECTURE_KEY.encode())
        if pos is None or _u32(data, pos) != _STRING:
            return None
        size = _u64(data, pos + 4)
        key = f"{bytes(data[pos + 12 : pos + 12 + size]).decode()}.context_length"
        pos = _value_at(data, n_kv, key.encode())
        if pos is None or _u32(data, pos) not in _INTEGERS:
            return None
        length: int = struct.unpack_from(_INTEGERS[_u32(data, pos)], data, pos + 4)[0]
        return TrainingContext(key, length)


@contextmanager
def _metadata(path: Path) -> Iterator[tuple[mmap.mmap, int]]:
    """The file mapped, and its key-value count; a short or foreign file is a ValueError."""
    with path.open("rb") as file:
        header = file.read(_HEADER.size)
        if len(header) < _HEADER.size or header[:4] != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        _magic, version, _tensors, n_kv = _HEADER.unpack(header)
        if version < 2:
            raise ValueError(f"{path}: not a GGUF file of version 2 or later")
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            try:
                yield data, n_kv
            except struct.error as exc:
                raise ValueError(f"{path}: not a GGUF file (its metadata is cut short)") from exc


def _value_at(data: mmap.mmap, n_kv: int, wanted: bytes) -> int | None:
    """Where the value of key `wanted` starts (at its type id), or None without the key."""
    pos = _HEADER.size
    for _ in range(n_kv):
        length = _u64(data, pos)
        name, pos = data[pos + 8 : pos + 8 + length], pos + 8 + length
        if name == wanted:
            return pos
        pos = _skip(data, _u32(data, pos), pos + 4)
    return None


def _skip(data: mmap.mmap, kind: int, pos: int) -> int:
    """The position after a value of type `kind` that starts at `pos`."""
    if kind in _SIZES:
        return pos + _SIZES[kind]
    if kind == _STRING:
        return pos + 8 + _u64(data, pos)
    if kind != _ARRAY:
        raise ValueError(f"unknown GGUF value type {kind}")
    item, count, pos = _u32(data, pos), _u64(data, pos + 4), pos + 12
    if item in _SIZES:
        return pos + count * _SIZES[item]
    for _ in range(count):
        pos = _skip(data, item, pos)
    return pos


def _u32(data: mmap.mmap, pos: int) -> int:
    value: int = struct.unpack_from("<I", data, pos)[0]
    return value


def _u64(data: mmap.mmap, pos: int) -> int:
    value: int = struct.unpack_from("<Q", data, pos)[0]
    return value
