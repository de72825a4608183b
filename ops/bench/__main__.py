"""`python -m ops.bench`: see ops/bench/cli.py, or run it with --help."""

from ops.bench.cli import main

raise SystemExit(main())
