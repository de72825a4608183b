"""What genq borrows from other libraries' internals, one module per borrowed internal.

Each module names what it borrows and the versions it was checked against, offers a public
(slower or less exact) fallback when the internal is not there, and is held to its contract
by tests/unit/test_adapters.py, which fails loudly when an upgrade moves the internal:

- redis_replies: redis-py's hiredis reader (`connection._parser._reader`), for the relay.
- llama_vocab: llama-cpp-python's model vocabulary (`Llama._model.vocab`), for end tokens.
- prometheus_values: prometheus_client's `values.ValueClass`, picked again for multiprocess.
- kombu_priority: kombu's Redis transport's naming of a queue's priority lists.
- ggml_invariance: ggml's switch for its tiled K-quant product and llama.cpp's build report,
  for batch-invariant decoding.
"""
