"""Drill time against restore time (README "Restore drills"): the torture schema and a ~1M-row table of mixed types.

For each dataset: a source database and a scratch database with the schema only; one backup; then, alternately,
`backupctl restore FILE --yes --local --database-url SCRATCH` and `backupctl drill FILE --local`, each in its own
process, timed from outside (process start-up and imports included in both). Prints the medians and the drill's
own per-step times and peak memory from its report. Needs the test PostgreSQL (TEST_ADMIN_DATABASE_URL).

    .venv/bin/python bench/drill_bench.py [--rows 1000000] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.harness.generators import mixed_sql  # noqa: E402 - after the path is set
from tests.test_torture_roundtrip import torture_sections  # noqa: E402

ADMIN = os.environ.get("TEST_ADMIN_DATABASE_URL", "postgresql://postgres@localhost:5432/postgres")
CTL = str(Path(sys.executable).parent / "backupctl")


def fresh(name: str) -> str:
    conn = psycopg2.connect(ADMIN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return ADMIN.rsplit("/", 1)[0] + "/" + name


def run_sql(url: str, text: str) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    conn.cursor().execute(text)
    conn.close()


def timed(args: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run([CTL, *args], env=env, capture_output=True, text=True, cwd=ROOT)
    took = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return took


def measure(label: str, schema: str, data: str, reps: int) -> None:
    source, scratch = fresh(f"drill_bench_{label}"), fresh(f"drill_bench_{label}_scratch")
    run_sql(source, schema + data)
    run_sql(scratch, schema)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DATABASE_URL": source, "DRILL_DATABASE_URL": scratch, "BACKUP_DIR": tmp}
        timed(["create", "--local"], env)
        backup = next(Path(tmp).glob("*.backup.gz"))
        restores, drills = [], []
        for _ in range(reps):
            restores.append(timed(["restore", backup.name, "--yes", "--local", "--database-url", scratch], env))
            drills.append(timed(["drill", backup.name, "--local"], env))
        report = json.loads(Path(f"{backup}.drill.json").read_text())
        size = backup.stat().st_size
    steps = ", ".join(f"{c['name']} {c['seconds']:.2f}" for c in report["checks"])
    print(f"{label}: {report['tables']} tables, {report['rows']:,} rows, backup {size / 1e6:.2f} MB; "
          f"{reps} reps")
    print(f"  restore (backupctl restore --yes --local): median {statistics.median(restores):.2f} s "
          f"({' / '.join(f'{t:.2f}' for t in restores)})")
    print(f"  drill   (backupctl drill --local):         median {statistics.median(drills):.2f} s "
          f"({' / '.join(f'{t:.2f}' for t in drills)}); "
          f"ratio {statistics.median(drills) / statistics.median(restores):.2f}x")
    print(f"  last drill's steps (s): {steps}; {report['rows_per_s']:,.0f} rows/s restored; peak RSS "
          f"{report['peak_rss_bytes'] / 2**20:.0f} MB "
          f"(with its children {(report['tree_peak_rss_bytes'] or 0) / 2**20:.0f} MB)")
    for name in (f"drill_bench_{label}", f"drill_bench_{label}_scratch"):
        conn = psycopg2.connect(ADMIN)
        conn.autocommit = True
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    schema, data = torture_sections()
    measure("torture", schema, data, args.reps)
    mixed = mixed_sql(args.rows)
    create, _, fill = mixed.partition("SELECT setseed")
    measure("mixed", create, "SELECT setseed" + fill, args.reps)
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
