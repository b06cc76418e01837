"""Command-line options of bench/run.py; --quick changes the defaults, never an option given explicitly."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .datasets import KINDS
from .operations import BY_KEY

BENCH = Path(__file__).resolve().parents[1]
REPO = BENCH.parent

# name: (full-run default, --quick default)
SIZES = {
    "reps": (3, 1),
    "wide_rows": (150, 6),
    "wide_row_mb": (5.0, 2.0),
    "many_tables": (1000, 50),
    "many_rows": (200, 200),
    "skewed_scale": (10, 1),
    "skewed_mixed_rows": (1_500_000, 60_000),
    "mixed_rows": (None, 20_000),
    "wait_idle": (60.0, 0.0),
}


@dataclass
class Options:
    scales: list[int]
    datasets: list[str]
    reps: int
    keep_db: bool
    quick: bool
    json: Path
    wide_rows: int
    wide_row_mb: float
    many_tables: int
    many_rows: int
    skewed_scale: int
    skewed_mixed_rows: int
    mixed_rows: int | None
    wait_idle: float
    timeout: float | None
    only: set[str] | None
    pg_url: str
    workdir: Path | None
    engine_from: Path
    db_tag: str
    redis_wait: float


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bench/run.py", description="backup_tasks against pg_dump/pg_restore, as "
                                 "users run both; see bench/README.md")
    ap.add_argument("--scale", type=int, action="append", help="pgbench scale of the pgbench dataset (repeatable: "
                    "two or more show growth); default 20, --quick 1")
    ap.add_argument("--datasets", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)} (all)")
    ap.add_argument("--reps", type=int, help="repetitions of each operation, alternating (default 3, --quick 1)")
    ap.add_argument("--keep-db", action="store_true", help="reuse source databases whose marker row says the build "
                    "completed, and keep them afterwards")
    ap.add_argument("--quick", action="store_true", help="small sizes, one repetition, no waiting for a quiet "
                    "machine: a smoke run of every row in a few minutes")
    ap.add_argument("--json", type=Path, default=BENCH / "results" / "latest.json", help="where the results go")
    ap.add_argument("--wide-rows", type=int, help="rows of the wide table (default 150, --quick 6)")
    ap.add_argument("--wide-row-mb", type=float, help="MB per wide row, half text, half bytea (default 5)")
    ap.add_argument("--many-tables", type=int, help="tables of the many dataset (default 1000, --quick 50)")
    ap.add_argument("--many-rows", type=int, help="rows per table of the many dataset (default 200)")
    ap.add_argument("--skewed-scale", type=int, help="pgbench scale of the skewed dataset (default 10)")
    ap.add_argument("--skewed-mixed-rows", type=int, help="rows of its big mixed table (default 1,500,000)")
    ap.add_argument("--mixed-rows", type=int, help="rows of the pgbench dataset's mixed table (default "
                    "max(50,000 x scale, 100,000))")
    ap.add_argument("--wait-idle", type=float, help="wait up to this many seconds before each measurement for "
                    "other work to use < 0.5 CPU (default 60, --quick 0); the load seen is recorded")
    ap.add_argument("--timeout", type=float, help="kill a command after this many seconds (default 10 x the "
                    "slowest reference run of the dataset, at least 120 s), with a py-spy dump")
    ap.add_argument("--only", help=f"comma-separated operation keys to run (of {', '.join(BY_KEY)})")
    ap.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432"),
                    help="server, without database name (env BENCH_PG_URL)")
    ap.add_argument("--workdir", type=Path, help="scratch directory (default: a temporary one, removed)")
    ap.add_argument("--db-tag", default="", help="put this in every database name (bench_TAG_...), so two runs on "
                    "one server, e.g. two engineers' smoke tests, never share a database")
    ap.add_argument("--redis-wait", type=float, default=600.0, help="seconds to wait for a free Redis database "
                    "(1-15) on 127.0.0.1:6379 before starting a private redis-server instead (default 600)")
    ap.add_argument("--engine-from", type=Path, default=REPO, help="the tree whose backup_tasks/ is copied and "
                    "measured (default: this checkout)")
    return ap


def parse(argv: list[str] | None = None) -> Options:
    ap = parser()
    a = ap.parse_args(argv)
    sized = {name: getattr(a, name) if getattr(a, name) is not None else SIZES[name][1 if a.quick else 0]
             for name in SIZES}
    kinds = [k.strip() for k in a.datasets.split(",") if k.strip()]
    if unknown := [k for k in kinds if k not in KINDS]:
        ap.error(f"unknown dataset(s) {unknown}; choose from {', '.join(KINDS)}")
    only = {k.strip() for k in a.only.split(",")} if a.only else None
    if only and (unknown := only - set(BY_KEY)):
        ap.error(f"unknown operation(s) {sorted(unknown)}")
    if sized["reps"] < 1:
        ap.error("--reps must be at least 1")
    if a.db_tag and not re.fullmatch(r"[a-z0-9_]{1,20}", a.db_tag):
        ap.error("--db-tag: at most 20 of a-z, 0-9, _")
    scales = sorted(set(a.scale or [1 if a.quick else 20]))
    return Options(scales=scales, datasets=kinds, keep_db=a.keep_db, quick=a.quick, json=a.json,
                   timeout=a.timeout, only=only, pg_url=a.pg_url, workdir=a.workdir,
                   engine_from=a.engine_from.resolve(), db_tag=a.db_tag, redis_wait=a.redis_wait, **sized)
