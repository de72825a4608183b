"""The built-in ``tiny`` model: a random-weight llama GGUF written locally.

It lets tests and demos exercise real loading, tokenization and sampling
without downloading anything. The generated text is nonsense by design.
Only gguf, numpy and the stdlib are used, so machines without the model
runtime can still build (and ship) the file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt

__all__ = [
    "TINY_EOS",
    "TINY_MODEL_VERSION",
    "TINY_N_CTX",
    "ensure_tiny_model",
    "tiny_model_path",
    "write_tiny_model",
]

# Part of the cache file name: bump on any layout/vocab/weight change so stale
# cached files are never picked up.
TINY_MODEL_VERSION: int = 1
TINY_N_CTX: int = 256

_N_EMBD = 64
_N_FF = 128
_N_LAYER = 2
_N_HEAD = 4
_N_HEAD_KV = 2  # grouped-query attention, as most real models use
_HEAD_DIM = _N_EMBD // _N_HEAD
_RMS_EPS = 1e-5
# Logit std is about sqrt(_N_EMBD) * _WEIGHT_SCALE (~1.6): spread enough that
# sampling varies token to token, peaked enough not to be uniform noise.
_WEIGHT_SCALE = 0.2

_UNK_ID, _BOS_ID, _EOS_ID = 0, 1, 2
TINY_EOS: int = _EOS_ID
_SPECIAL = ("<unk>", "<s>", "</s>")
# Multi-character and non-ASCII pieces. Prefix chains ("▁t", "▁th", "▁the")
# exist because SentencePiece only merges adjacent pieces whose concatenation
# is itself in the vocabulary. Characters not listed (e.g. "ö") fall back to
# byte tokens, so multi-byte UTF-8 gets split across tokens.
_EXTRA = (
    "▁", "▁t", "▁th", "▁the", "▁a", "er", "in", "é", "ü", "ß", "€",
    "日本", "語", "▁ü", "ber", "▁über", "😀",
)  # fmt: skip

# Jinja template over messages[*].role/content; markers are plain text, not
# special tokens, so any tokenizer path handles them.
_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_F32 = npt.NDArray[np.float32]


def tiny_model_path(cache_dir: Path, seed: int = 0) -> Path:
    """Where the cached tiny model for ``seed`` lives inside ``cache_dir``."""
    return cache_dir / f"tiny-v{TINY_MODEL_VERSION}-s{seed}.gguf"


def ensure_tiny_model(cache_dir: Path, seed: int = 0) -> Path:
    """Return the cached tiny model, writing it first if it is missing.

    Concurrent callers may both write; each write is an atomic replace of
    byte-identical content, so readers never see a partial file.
    """
    path = tiny_model_path(cache_dir, seed)
    if not path.is_file():
        write_tiny_model(path, seed)
    return path


def write_tiny_model(path: Path, seed: int = 0) -> Path:
    """Write the tiny model to ``path`` atomically; same seed, same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)  # GGUFWriter opens the file by name itself.
    tmp = Path(tmp_name)
    try:
        _write_gguf(tmp, seed)
        _fsync(tmp)  # so a crash cannot leave a replaced-but-empty file
        tmp.chmod(0o644)  # mkstemp's 0600 would hide a shared cache
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _fsync(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _write_gguf(path: Path, seed: int) -> None:
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        _add_hparams(writer)
        _add_vocab(writer)
        rng = np.random.default_rng(seed)
        for name, tensor in _tensors(rng, len(_vocab())):
            writer.add_tensor(name, tensor)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def _add_hparams(writer: gguf.GGUFWriter) -> None:
    writer.add_name("genq-tiny")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(TINY_N_CTX)
    writer.add_embedding_length(_N_EMBD)
    writer.add_block_count(_N_LAYER)
    writer.add_feed_forward_length(_N_FF)
    writer.add_head_count(_N_HEAD)
    writer.add_head_count_kv(_N_HEAD_KV)
    writer.add_rope_dimension_count(_HEAD_DIM)
    writer.add_layer_norm_rms_eps(_RMS_EPS)


def _vocab() -> list[tuple[str, float, gguf.TokenType]]:
    """(piece, score, type) in id order: specials, 256 bytes, extras."""
    control = gguf.TokenType.CONTROL
    vocab = [
        (_SPECIAL[_UNK_ID], 0.0, gguf.TokenType.UNKNOWN),
        (_SPECIAL[_BOS_ID], 0.0, control),
        (_SPECIAL[_EOS_ID], 0.0, control),
    ]
    # Byte scores are irrelevant to merging but kept lowest, as in real vocabs.
    vocab += [(f"<0x{b:02X}>", -1000.0, gguf.TokenType.BYTE) for b in range(256)]
    # Longer pieces score higher so the longest available merge wins.
    vocab += [(p, float(len(p)), gguf.TokenType.NORMAL) for p in _EXTRA]
    return vocab


def _add_vocab(writer: gguf.GGUFWriter) -> None:
    vocab = _vocab()
    writer.add_tokenizer_model("llama")
    writer.add_token_list([piece for piece, _, _ in vocab])
    writer.add_token_scores([score for _, score, _ in vocab])
    writer.add_token_types([kind for _, _, kind in vocab])
    writer.add_unk_token_id(_UNK_ID)
    writer.add_bos_token_id(_BOS_ID)
    writer.add_eos_token_id(_EOS_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(_CHAT_TEMPLATE)


def _tensors(rng: np.random.Generator, n_vocab: int) -> Iterator[tuple[str, _F32]]:
    """Yield (name, weight) in a fixed order; shapes are numpy (out, in)."""
    T = gguf.MODEL_TENSOR
    kv_dim = _N_HEAD_KV * _HEAD_DIM

    def name(kind: gguf.MODEL_TENSOR, bid: int = 0) -> str:
        return gguf.TENSOR_NAMES[kind].format(bid=bid) + ".weight"

    def rand(*shape: int) -> _F32:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(_WEIGHT_SCALE)

    ones = np.ones(_N_EMBD, dtype=np.float32)
    yield name(T.TOKEN_EMBD), rand(n_vocab, _N_EMBD)
    for bid in range(_N_LAYER):
        yield name(T.ATTN_NORM, bid), ones
        yield name(T.ATTN_Q, bid), rand(_N_EMBD, _N_EMBD)
        yield name(T.ATTN_K, bid), rand(kv_dim, _N_EMBD)
        yield name(T.ATTN_V, bid), rand(kv_dim, _N_EMBD)
        yield name(T.ATTN_OUT, bid), rand(_N_EMBD, _N_EMBD)
        yield name(T.FFN_NORM, bid), ones
        yield name(T.FFN_GATE, bid), rand(_N_FF, _N_EMBD)
        yield name(T.FFN_UP, bid), rand(_N_FF, _N_EMBD)
        yield name(T.FFN_DOWN, bid), rand(_N_EMBD, _N_FF)
    yield name(T.OUTPUT_NORM), ones
    yield name(T.OUTPUT), rand(n_vocab, _N_EMBD)
