"""The independent oracle (tests/oracle.py: per table count + md5 of the sorted row text, every sequence) on
the source and the restore target. The source does not change during a run, so its snapshot is taken once."""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.oracle import assert_same, snapshot  # noqa: E402 - after the path is set


class Oracle:
    def __init__(self, source_url: str):
        self.source_url = source_url
        self._source: dict | None = None

    def compare(self, target_url: str) -> dict:
        """{"verdict": "EQUAL" | "DIFFERENT", "detail", "seconds"}: the target against the source."""
        t0 = time.perf_counter()
        if self._source is None:
            self._source = snapshot(self.source_url)
        try:
            assert_same(self._source, snapshot(target_url))
            verdict, detail = "EQUAL", None
        except AssertionError as exc:
            verdict, detail = "DIFFERENT", str(exc)[:2000]
        return {"verdict": verdict, "detail": detail, "seconds": round(time.perf_counter() - t0, 1)}
