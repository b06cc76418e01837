"""The benchmark harness cannot rot: `bench/run.py --quick` runs every row of `make bench` on small data.

No timing or memory figure is asserted (the machine is shared and noisy; the targets are for `make bench` on
a quiet machine): only that every operation of every dataset ran, that the ones this engine cannot run are
reported as not available, that every restore was checked by the oracle and found EQUAL, and that the diffs
found what was changed and nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from harness.operations import OPERATIONS  # noqa: E402 - after the path is set

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    # A tag of its own: two engineers' test runs on one server never share a database.
    tag = f"smoke{os.getpid()}"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--db-tag", tag,
                           "--json", str(out)], check=False, cwd=ROOT, capture_output=True, text=True, timeout=1100)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_it_finishes_with_a_verdict(quick_run):
    proc, doc = quick_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert "error" not in doc
    assert doc["verdict"].splitlines()[0] in proc.stdout
    assert doc["verdict"].startswith(("ALL TARGETS MET", "TARGETS NOT MET", "TARGETS MET, BUT"))
    assert {d["kind"] for d in doc["datasets"]} == {"pgbench", "wide", "many", "skewed"}


def test_every_operation_ran_or_is_not_available(quick_run):
    _, doc = quick_run
    # This tree's `backupctl create` has --jobs: the parallel rows must run, not be skipped as unavailable.
    assert doc["engine"]["features"]["jobs"], doc["engine"]["features"]
    for ds in doc["datasets"]:
        expected = {op.key for op in OPERATIONS if ds["kind"] in op.kinds}
        assert set(ds["runs"]) | set(ds["skipped"]) == expected, ds["label"]
        assert all(reason.startswith("not available") for reason in ds["skipped"].values()), ds["skipped"]
        for key, runs in ds["runs"].items():
            assert runs and all(r["ok"] for r in runs), (ds["label"], key, [r.get("error") for r in runs])
            assert all(r["wall_s"] > 0 and r["client_peak_rss_mb"] > 0 for r in runs), (ds["label"], key)
            queued = next(op.queued for op in OPERATIONS if op.key == key)
            assert all(("worker" in r) == queued for r in runs), (ds["label"], key)
            # PSS splits shared pages: never above the RSS of the same tree, and never nothing for a queued job.
            assert all(0 < r["worker"]["peak_process_pss_mb"] <= r["worker"]["peak_process_rss_mb"]
                       for r in runs if queued), (ds["label"], key)


def test_every_restore_was_checked_by_the_oracle_and_equal(quick_run):
    _, doc = quick_run
    for ds in doc["datasets"]:
        restores = {op.key for op in OPERATIONS if op.oracle and op.key in ds["runs"]}
        assert restores and set(ds["oracle"]) == restores, ds["label"]
        assert {v["verdict"] for v in ds["oracle"].values()} == {"EQUAL"}, ds["oracle"]


def test_the_diffs_found_the_changes_and_only_them(quick_run):
    _, doc = quick_run
    for ds in doc["datasets"]:
        assert ds["runs"]["diff_unchanged_local"][-1]["changes"] == {}, ds["label"]
        for key in ("diff_changed_local", "diff_changed_queued"):
            assert ds["runs"][key][-1]["changes"], (ds["label"], key)


def test_every_parallel_time_target_has_its_cpu_floor(quick_run):
    """The floor says whether a missed time target could be met on this machine's cores at this run's work."""
    _, doc = quick_run
    cores = doc["machine"]["cpus"]
    for ds in doc["datasets"]:
        if ds["kind"] not in ("pgbench", "skewed"):
            continue
        floors = doc["cpu_floors"][ds["label"]]
        assert {"create_jobs2 / pg_dump_fc", "create_jobs2 / create_jobs1"} <= set(floors), floors
        for v in floors.values():
            assert v["cores"] == cores and 0 < v["floor_s"] and 0 < v["floor_ratio"], v
        assert f"CPU floor on {cores} cores, create_jobs2 / create_jobs1" in doc["table"]
