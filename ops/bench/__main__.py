"""`python -m ops.bench`: see ops/bench/cli.py, or run it with --help."""

from ops.bench import main

raise SystemExit(main())
