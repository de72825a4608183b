"""`python -m ops.bench`: see ops/bench/cli.py, or run it with --help."""

import os
import sys

# Before llama_cpp loads OpenMP, which reads it once; every process of the run inherits it.
if "--omp-spin" not in sys.argv[1:]:
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
from ops.bench.cli import main

raise SystemExit(main())
