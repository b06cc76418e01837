"""The bench's CPU floor (bench/harness/evaluate.cpu_floors): pure arithmetic on a run's summaries, no services."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from harness.evaluate import cpu_floors


def _summary(time_s: float, cpu_total_s: float) -> dict:
    return {"ok": 1, "time_s": time_s, "cpu_total_s": cpu_total_s}


def test_the_floor_spreads_the_cpu_seconds_over_the_cores_against_the_reference_time():
    s = {"create_jobs1": _summary(10.0, 14.0), "create_jobs2": _summary(9.0, 16.0),
         "pg_dump_fc": _summary(12.0, 17.0)}
    floors = cpu_floors({"kind": "pgbench"}, s, cores=2)
    assert floors["create_jobs2 / create_jobs1"] == {"floor_s": 8.0, "floor_ratio": 0.8, "limit": 0.8, "cores": 2}
    assert floors["create_jobs2 / pg_dump_fc"]["floor_ratio"] == round(8.0 / 12.0, 3)
    # Four cores halve it: the same work, spread wider.
    assert cpu_floors({"kind": "pgbench"}, s, cores=4)["create_jobs2 / create_jobs1"]["floor_ratio"] == 0.4


def test_no_floor_for_references_failed_runs_or_operations_not_run():
    # A failed summary still carrying figures: only its `ok` keeps it out. pg_dump_fc has figures but is a reference.
    s = {"create_jobs2": {"ok": 0, "time_s": 9.0, "cpu_total_s": 16.0}, "create_jobs1": _summary(10.0, 14.0),
         "pg_dump_fc": _summary(12.0, 17.0)}
    floors = cpu_floors({"kind": "pgbench"}, s, cores=2)
    assert not any(key.startswith(("create_jobs2", "pg_dump")) for key in floors), floors
