"""The whole run: check the tools, copy the engine, claim a Redis database, bench every dataset, then print
the table and the verdict and write the JSON. Exit status: 0 measured (targets met or not: see the verdict),
1 an oracle said DIFFERENT or an operation failed, 2 the harness could not run."""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import psycopg2

from . import datasets, options, report
from .engine import Engine, fingerprint
from .evaluate import cpu_floors, evaluate_all, summaries
from .pg import HarnessError, Pg
from .quiet import Quiet
from .session import Harness, bench_dataset, drop_warm_dbs, make_warm_dbs
from .worker import broker


def log(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", flush=True)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def preflight(pg: Pg) -> str:
    for tool in ("pg_dump", "pg_restore", "pgbench", "psql"):
        if not shutil.which(tool):
            raise HarnessError(f"{tool} is not on PATH")
    if pg.has_password:
        raise HarnessError("--pg-url has a password: queued commands refuse a --database-url with one; use a "
                           "server that trusts the benchmark's role, or ~/.pgpass")
    try:
        return pg.value("postgres", "SHOW server_version")
    except psycopg2.Error as exc:
        raise HarnessError(f"cannot connect to {pg.base}: {str(exc).strip()}") from None


def header(opts, pg: Pg, engine: Engine, server: str) -> dict:
    return {
        "started_at": _now(), "argv": sys.argv[1:], "quick": opts.quick, "reps": opts.reps,
        "engine": {"from": str(engine.source_tree), "git": engine.git, "fingerprint": engine.fingerprint,
                   "features": {k: v for k, v in engine.features.items() if not k.endswith("_help")}},
        "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg(), "python": platform.python_version(),
                    "server_version": server, "kernel": platform.release(),
                    "pg_dump": pg.tool("pg_dump", "--version").stdout.strip()},
        "datasets": [],
    }


def main(argv: list[str] | None = None) -> int:
    opts = options.parse(argv)
    pg = Pg(opts.pg_url)
    work = opts.workdir or Path(tempfile.mkdtemp(prefix="backup_tasks_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    doc: dict = {"started_at": _now()}
    redis, h, code = None, None, 0
    try:
        server = preflight(pg)
        engine = Engine.snapshot(opts.engine_from, work)
        engine.check_import(work)
        engine.detect_features(work)
        doc = header(opts, pg, engine, server)
        log(f"engine: copy of {opts.engine_from}/backup_tasks (git {engine.git['head']}, fingerprint "
            f"{engine.fingerprint}); features: {doc['engine']['features']}")
        redis = broker(opts.redis_wait, log)
        h = Harness(opts, pg, engine, Quiet(max_wait_s=opts.wait_idle), work, log, redis, pg.postmaster_pid())
        make_warm_dbs(h)
        for ds in datasets.plan(opts):
            doc["datasets"].append(bench_dataset(h, ds))
            report.write_json(opts.json, doc)
        code = finish(doc, engine)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        doc["error"] = str(exc)
        code = 2
    finally:
        if h:
            drop_warm_dbs(h)
        if redis:
            redis.release()
        doc["finished_at"] = _now()
        report.write_json(opts.json, doc)
        if opts.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nresults written to {opts.json}")
    return code


def finish(doc: dict, engine: Engine) -> int:
    """Print the table and the verdict; the exit status they give."""
    results = doc["datasets"]
    verdicts = evaluate_all(results)
    doc["targets"] = verdicts
    doc["machine"]["loadavg_end"] = os.getloadavg()
    cores = doc["machine"]["cpus"]
    doc["cpu_floors"] = {res["label"]: cpu_floors(res, summaries(res), cores) for res in results}
    doc["table"] = report.table(report.rows(results, verdicts, doc["cpu_floors"]))
    doc["verdict"] = report.verdict(verdicts)
    print()
    for res in results:
        print(report.dataset_line(res))
    m = doc["machine"]
    print(f"machine: {m['cpus']} CPUs, load average {m['loadavg_start'][0]:.2f} at start, "
          f"{m['loadavg_end'][0]:.2f} at end; PostgreSQL {m['server_version']}; {doc['reps']} reps, ABBA")
    changed = fingerprint(engine.source_tree) != engine.fingerprint
    dirty = " + uncommitted changes" if engine.git["engine_dirty"] else ""
    print(f"engine: git {engine.git['head'] or '(not a git tree)'}{dirty}, fingerprint {engine.fingerprint}, every "
          f"command ran the copy taken at the start" + (" (the tree has changed since)" if changed else ""))
    if not engine.still_same():
        print("WARNING: the engine's copy changed during the run: the figures mix versions")
    print(doc["table"])
    print(doc["verdict"])
    oracle_bad = any(v["verdict"] != "EQUAL" for r in results for v in r["oracle"].values())
    failed = any(not run.get("ok") for r in results for runs in r["runs"].values() for run in runs)
    if oracle_bad:
        print("ORACLE: DIFFERENT after a restore: the run fails")
    return 1 if oracle_bad or failed else 0
