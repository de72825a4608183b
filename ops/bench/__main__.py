"""`python -m ops.bench`: see ops/bench/cli.py, or run it with --help."""

import os
import sys

if "--omp-spin" not in sys.argv[1:]:
    # Set before llama_cpp loads OpenMP, which reads it once; every process the run starts
    # (workers, baselines) inherits it, so that both sides of a ratio share it.
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")

from ops.bench.cli import main  # after the variable: it loads llama_cpp

raise SystemExit(main())
