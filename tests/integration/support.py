"""Constants and helpers the integration tests share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from genq.common.tinymodel import TINY_N_CTX, ensure_tiny_model

BROKEN_MODEL = "broken"  # a registry entry whose file is not a GGUF model
GENQ = Path(sys.executable).with_name("genq")


def run_genq(
    env: dict[str, str], *args: str, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """The genq CLI as a user runs it, with GENQ_* variables from `env`."""
    return subprocess.run(
        [str(GENQ), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def two_models(root: Path) -> Path:
    """A registry of two tiny cpu models with different weights, `one` and `two`."""
    entries = []
    for name, seed in (("one", 1), ("two", 2)):
        path = ensure_tiny_model(root, seed)
        entries.append(
            f'[models.{name}]\nbackend = "llama"\npath = "{path}"\n'
            f"n_ctx = {TINY_N_CTX}\nn_threads = 1\n"
        )
    registry = root / "two.toml"
    registry.write_text("\n".join(entries))
    return registry
