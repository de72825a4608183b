"""A local model's weights, loaded for batch-invariant decoding.

llama-cpp-python's `Llama` loads weights with llama.cpp's default model parameters, which
repack quantized weights for the CPU (CPU_REPACK). Repacked weights take gemv or gemm kernels
by batch size, so a sequence's logits would depend on its batch. genq loads the weights itself
with `use_extra_bufts = false` (a public model parameter), and uses `Llama` for the vocabulary,
tokenizer and chat template only (`vocab_only`). Measured on gemma-3-270m: no throughput cost.
"""

from __future__ import annotations

from pathlib import Path

import llama_cpp as lc

from genq.common.errors import ModelLoadError

# No CPU_REPACK buffers (llama.cpp's "extra buffer types"): see the module's docstring.
EXTRA_BUFTS = False


def load_weights(path: Path, n_gpu_layers: int, name: str) -> lc.llama_model_p:
    """The model's weights, not repacked; ModelLoadError when llama.cpp cannot load them."""
    params = lc.llama_model_default_params()
    params.n_gpu_layers = n_gpu_layers
    params.use_extra_bufts = EXTRA_BUFTS
    model: lc.llama_model_p = lc.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise ModelLoadError(f"model {name!r}: llama.cpp cannot load the weights in {path}")
    return model


def free_weights(model: lc.llama_model_p) -> None:
    if model:
        lc.llama_model_free(model)
