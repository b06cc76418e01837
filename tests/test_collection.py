"""`make test` runs pytest-xdist, which refuses the whole run when its processes collect different test ids.

Ids made of bytes that hold the time (a gzip header's mtime) differed across a second boundary; ids in the order
of a set would differ by each process's hash seed. Collected twice, a second apart, with two hash seeds: the same.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _collected(seed: str) -> list[str]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-p", "no:xdist", str(ROOT / "tests")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return [line for line in done.stdout.splitlines() if "::" in line]


def test_every_process_collects_the_same_test_ids() -> None:
    first = _collected("1")
    time.sleep(1.1)
    second = _collected("2")
    assert len(first) > 600
    assert first == second, sorted(set(first) ^ set(second))[:10]
