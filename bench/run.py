#!/usr/bin/env python
"""Benchmark: backup_tasks against pg_dump/pg_restore, every operation as a user runs it, side by side.

    make bench                                   # every dataset, full size, 3 alternating repetitions
    make bench BENCH_ARGS="--quick"              # every row on small data: a smoke run
    .venv/bin/python bench/run.py --help

The method, the rows and the targets: bench/README.md. The code: bench/harness/ (its __init__ lists the modules).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: procfs and the harness package

from harness.main import main

if __name__ == "__main__":
    sys.exit(main())
