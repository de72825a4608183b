"""genq's benchmark: `python -m ops.bench` (or `make bench`; ops/bench/cli.py). Nothing is
imported here: the helper processes a run starts (`python -m ops.bench.child`) import this
package first, and should not pay for llama_cpp and the rest of the command."""
