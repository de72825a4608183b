"""The models a worker process runs, behind one `Backend` face (generation/loop.py).

Module map:
    models   the models a process has loaded, by name: loaded on first use, kept while they fit
    llama    a local GGUF model, run by the llama.cpp runner (runtime/)
    remote   a model behind an OpenAI-compatible server (vLLM, llama-server, …)
"""
