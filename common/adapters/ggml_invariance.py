"""llama.cpp's CPU kernels that make a sequence's logits depend on its batch, switched off.

Borrowed (ggml's CPU backend as vendored by llama-cpp-python 0.3.36):
- the environment variable `GGML_CPU_TILED_MM`, read once per process, which turns off the
  tiled K-quant matrix product that ggml takes for eight rows or more (its sums run in
  another order than the `vec_dot` of fewer rows: gemma-3-270m's logits differed by up to
  1.1 beside 7 other sequences, and after 64-token prompt chunks);
- the marker `LLAMAFILE = 1` in `llama_print_system_info()`, which says that llamafile's
  `sgemm` was compiled in (it serves products of two rows or more; genq's install builds
  llama.cpp with `-DGGML_LLAMAFILE=OFF`, see the Makefile).

Fallback: where a later llama.cpp drops the variable, setting it does nothing, and the
invariance tests (tests/integration/test_invariance.py, tests/realmodel) fail, which is the
loud signal wanted. Contract: tests/unit/test_adapters.py checks that the library still
contains the variable's name and still prints the marker's key.
"""

from __future__ import annotations

import logging
import os

import llama_cpp as lc

log = logging.getLogger(__name__)

TILED_MM = "GGML_CPU_TILED_MM"
LLAMAFILE_ON = "LLAMAFILE = 1"


def make_invariant() -> None:
    """Turn off the tiled matrix product for this process; call before its first decode
    (ggml reads the variable once)."""
    os.environ[TILED_MM] = "0"


def system_info() -> str:
    return bytes(lc.llama_print_system_info()).decode("utf-8", "replace")


def invariant_build() -> bool:
    """Whether this llama.cpp was built without llamafile's sgemm."""
    return LLAMAFILE_ON not in system_info()


def warn_if_variant() -> bool:
    """Say once, in the log, when this build's batched decode is not batch-invariant."""
    if invariant_build():
        return False
    log.warning(
        "llama-cpp-python was built with llamafile's sgemm: batched jobs are not bit-identical "
        "after a resume; reinstall it with CMAKE_ARGS=-DGGML_LLAMAFILE=OFF (make install does)"
    )
    return True
