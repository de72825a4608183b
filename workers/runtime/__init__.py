"""The llama.cpp runner: local models decoded batch-invariantly, up to `slots` jobs at once.

Module map:
    weights    a model's weights, loaded for batch-invariant decoding
    decoder    a llama.cpp context and its token batch (llama-cpp-python's low-level API)
    engine     continuous batching: one engine thread decodes every slot's next token
    sampling   llama.cpp's sampler chain per sequence, seeded per position
"""
