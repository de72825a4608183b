"""Constants and helpers the integration tests share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
