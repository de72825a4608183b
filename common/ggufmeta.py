"""Whether a GGUF file's metadata holds a key, read without loading the model.

`genq models` asks whether each model's file has a chat template. llama-cpp-python's
vocabulary-only load takes seconds on gemma-3-270m's 262,144-token vocabulary, and
`gguf.GGUFReader` half a minute; this walks the key-value section alone (about 0.2 s).
Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (little-endian, version 2+).
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # by type id
_STRING, _ARRAY = 8, 9
_HEADER = struct.Struct("<4sIQQ")  # magic, version, tensor count, key-value count


def has_key(path: Path, key: str) -> bool:
    """True if the file's metadata has `key`; ValueError for a file that is not GGUF v2+ (or
    is cut short)."""
    with path.open("rb") as file:
        header = file.read(_HEADER.size)
        if len(header) < _HEADER.size or header[:4] != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        _magic, version, _tensors, n_kv = _HEADER.unpack(header)
        if version < 2:
            raise ValueError(f"{path}: not a GGUF file of version 2 or later")
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            try:
                return _find(data, n_kv, key.encode())
            except struct.error as exc:
                raise ValueError(f"{path}: not a GGUF file (its metadata is cut short)") from exc


def _find(data: mmap.mmap, n_kv: int, wanted: bytes) -> bool:
    pos = _HEADER.size
    for _ in range(n_kv):
        length = _u64(data, pos)
        name, pos = data[pos + 8 : pos + 8 + length], pos + 8 + length
        if name == wanted:
            return True
        pos = _skip(data, _u32(data, pos), pos + 4)
    return False


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
