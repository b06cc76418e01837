#!/usr/bin/env python
"""Benchmark: pg_dump/pg_restore against backup_tasks, side by side, alternating, on the same machine and run.

    .venv/bin/python bench/run.py [--scale N ...] [--reps 3] [--json PATH] [--keep-db] [--celery] [--profile]
    make bench BENCH_ARGS="--scale 5 --scale 20 --keep-db"

For each scale N it builds (or, with --keep-db, reuses) the database bench_sN: `pgbench -i -s N` with primary keys
plus a table `mixed` of max(50,000 x N, 100,000) rows of awkward types, and bench_sN_target with the same schema and
no rows. Then, --reps times, alternating which side goes first:

  backup   `pg_dump -Fc --data-only`                                vs run_backup()
  restore  `pg_restore --data-only --single-transaction --disable-triggers` into the emptied target
                                  vs restore_backup(show_diff=False) into the emptied target (it truncates again,
                                  inside its transaction; once more, informational: into the target full of rows)
  diff     calculate_diff(detailed=True) of our file against the source

Every operation runs in its own process. Our operations run in a fresh interpreter (bench/_child.py) that reports
the library call's own duration and its peak RSS (VmHWM of its own address space, read just before it exits; and,
sampled from /proc every 10 ms, the sum of the RSS of it and its child processes: the diff reads the database
through one); pg_dump and pg_restore are timed from outside and their VmHWM is sampled from /proc every 10 ms. (getrusage's
ru_maxrss is not used for peaks: Linux folds the spawning parent's RSS at fork time into the child's maxrss.)
After our last restore, the target is compared with the source by the independent oracle in tests/oracle.py.

Everything is printed as one table and written to --json (default bench/results/latest.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
CHILD = BENCH / "_child.py"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psycopg2  # noqa: E402
from procfs import process_tree, status_kb  # noqa: E402  (bench/ is the script's directory)

MiB = 1024 * 1024

# Targets of issue 6.
T_BACKUP_TIME = 0.75   # x pg_dump -Fc time
T_BACKUP_SIZE = 1.15   # x pg_dump -Fc file size
T_RESTORE_TIME = 1.0   # x pg_restore --data-only --single-transaction
T_DIFF_TIME = 1.5      # x our backup time
T_RSS_MB = 100.0
T_RSS_FLAT = 1.15      # peak RSS at the largest scale / at the smallest
T_LINEAR = 1.25        # time per row at the largest scale / at the smallest ("roughly linear")
T_QUEUE_S = 0.5


# ------------------------------------------------------------------------------------------------ helpers
def log(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", flush=True)


class HarnessError(RuntimeError):
    pass


class Pg:
    """Where the server is: a base URL without database name; tools get it through PG* variables."""

    def __init__(self, base_url: str):
        parts = urlsplit(base_url)
        self.base = base_url.rstrip("/")
        if parts.path not in ("", "/"):
            self.base = base_url[: base_url.rfind("/")]
        self.env = dict(os.environ)
        if parts.hostname:
            self.env["PGHOST"] = parts.hostname
        if parts.port:
            self.env["PGPORT"] = str(parts.port)
        if parts.username:
            self.env["PGUSER"] = parts.username
        if parts.password:
            self.env["PGPASSWORD"] = parts.password

    def url(self, db: str) -> str:
        return f"{self.base}/{db}"

    def connect(self, db: str = "postgres"):
        conn = psycopg2.connect(self.url(db))
        conn.autocommit = True
        return conn

    def execute(self, db: str, statement: str, params=None) -> list:
        conn = self.connect(db)
        try:
            cur = conn.cursor()
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def tool(self, *cmd: str, input: str | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(cmd), env=self.env, input=input, capture_output=True, text=True)
        if proc.returncode != 0:
            raise HarnessError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc


def machine_busy() -> tuple[int, int]:
    """(busy jiffies, total jiffies) over all CPUs, from /proc/stat."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


def pyspy_path() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def run_measured(cmd: list[str], env: dict | None = None, cwd: Path | None = None,
                 timeout: float | None = None) -> dict:
    """Run cmd; wall time, exit code, CPU time (wait4, children included), peak RSS of that process and its
    children (sampled every 10 ms: its VmHWM, and the sum of the current RSS of the process tree).

    A process still running after `timeout` seconds is dumped with py-spy (when installed: where it hangs) and
    killed; the result then has timed_out=True."""
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    busy0, total0 = machine_busy()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd)  # returns once exec has succeeded
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        # The peak of the process itself (VmHWM), and of the sum of the current RSS of it and every process it
        # started (the diff reads the database through a child process): the larger of the two is reported.
        while not done.is_set():
            hwm = status_kb(proc.pid, "VmHWM") or 0
            tree = sum(status_kb(pid, "VmRSS") or 0 for pid in process_tree(proc.pid))
            peak[0] = max(peak[0], hwm, tree)
            done.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    hung: dict = {}

    def kill() -> None:
        spy = pyspy_path()
        if spy:
            try:
                hung["py_spy_dump"] = subprocess.run([spy, "dump", "--pid", str(proc.pid)], capture_output=True,
                                                     text=True, timeout=30).stdout
            except (OSError, subprocess.SubprocessError):
                pass
        hung["timed_out"] = True
        proc.kill()

    killer = threading.Timer(timeout, kill) if timeout else None
    if killer:
        killer.daemon = True
        killer.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if killer:
        killer.cancel()
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    busy1, total1 = machine_busy()
    out.seek(0)
    err.seek(0)
    ncpu = os.cpu_count() or 1
    return {
        "wall_s": wall,
        "rc": proc.returncode,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_kb_sampled": peak[0],
        "machine_busy_cores": round(ncpu * (busy1 - busy0) / max(total1 - total0, 1), 2),
        "stdout": out.read().decode("utf-8", "replace"),
        "stderr": err.read().decode("utf-8", "replace"),
        **hung,
    }


ENGINE_ROOT = [REPO]  # where the children import backup_tasks from: REPO, or a snapshot of it (--live-engine off)


def engine_fingerprint(root: Path | None = None) -> str:
    """Hash of the package's source as it is on disk now (others edit the working tree while benchmarks run)."""
    root = root or ENGINE_ROOT[0]
    h = hashlib.sha256()
    for f in sorted((root / "backup_tasks").rglob("*.py")):
        try:
            data = f.read_bytes()
        except OSError:
            continue
        h.update(str(f.relative_to(root)).encode() + b"\0" + data + b"\0")
    return h.hexdigest()[:12]


def snapshot_engine(work: Path) -> Path:
    """Copy backup_tasks/ (and beat_schedule.py) as they are now: every measurement of the run then uses the same
    code, whatever others commit meanwhile."""
    dest = work / "engine"
    shutil.copytree(REPO / "backup_tasks", dest / "backup_tasks",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if (REPO / "beat_schedule.py").exists():
        shutil.copy2(REPO / "beat_schedule.py", dest / "beat_schedule.py")
    return dest


ENGINES_SEEN: dict[str, list[str]] = {}  # fingerprint -> operations measured with it


def git_state() -> dict:
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    return {"head": git("rev-parse", "--short", "HEAD"), "engine_dirty": bool(git("status", "--porcelain",
                                                                                    "--", "backup_tasks"))}


def run_ours(op: str, args: dict, env: dict, timeout: float | None = None) -> dict:
    """One of our operations in a fresh interpreter; its own duration and VmHWM come back on stdout."""
    before = engine_fingerprint()
    r = run_measured([sys.executable, str(CHILD), op, json.dumps(args)], env=env, cwd=REPO, timeout=timeout)
    after = engine_fingerprint()
    r["engine"] = before if before == after else f"{before}->{after}"
    ENGINES_SEEN.setdefault(r["engine"], []).append(op)
    lines = [ln for ln in r["stdout"].splitlines() if ln.startswith("{")]
    if r.get("timed_out"):
        raise HarnessError(f"our {op} hung: killed after {timeout:.0f} s; where it was:\n"
                           f"{r.get('py_spy_dump') or '(install py-spy to see where)'}\nhung after {timeout:.0f} s")
    if r["rc"] != 0 or not lines:
        raise HarnessError(f"our {op} failed (exit {r['rc']}):\n{r['stderr'][-3000:]}")
    info = json.loads(lines[-1])
    r.update(info)
    if info.get("engine_file") and not Path(info["engine_file"]).is_relative_to(ENGINE_ROOT[0]):
        raise HarnessError(f"the child imported backup_tasks from {info['engine_file']}, not from {ENGINE_ROOT[0]}")
    r["peak_rss_kb"] = max(info.get("vmhwm_kb") or 0, r["peak_rss_kb_sampled"])
    r["time_s"] = info["seconds"]            # the library call alone
    r["startup_s"] = r["wall_s"] - info["seconds"]  # interpreter start-up + imports + exit
    del r["stdout"]
    return r


def run_tool(cmd: list[str], env: dict) -> dict:
    r = run_measured(cmd, env=env)
    if r["rc"] != 0:
        raise HarnessError(f"{' '.join(cmd)} failed (exit {r['rc']}):\n{r['stderr'][-3000:]}")
    r["peak_rss_kb"] = r["peak_rss_kb_sampled"]
    r["time_s"] = r["wall_s"]
    del r["stdout"]
    return r


def noise(r: dict) -> str:
    """How busy the machine was: before the run (others alone) and during it (all CPUs, ours included)."""
    before = r.get("busy_cores_before")
    return (f"  [cpus busy: {before:.1f} before, {r['machine_busy_cores']:.1f} during]" if before is not None
            else f"  [cpus busy during: {r['machine_busy_cores']:.1f}]")


def med(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


# ------------------------------------------------------------------------------------------------ databases
MIXED_SQL = r"""
CREATE TABLE mixed (
    id   bigserial PRIMARY KEY,
    t    text,
    n    numeric(20,6),
    f    float8,
    ts   timestamptz,
    j    jsonb,
    arr  text[],
    b    bytea,
    u    uuid
);
SELECT setseed(0.42);
INSERT INTO mixed (t, n, f, ts, j, arr, b, u)
SELECT
    CASE WHEN random() < 0.1 THEN NULL
         ELSE 'row ' || i || E'\ttab\\backslash "double" ''single''\nsecond line ' || md5(i::text)
              || ' é ß Ω 日本語 🙂 ' || repeat('x', i % 37) END,
    CASE WHEN random() < 0.1 THEN NULL ELSE round((random() * 2e9 - 1e9)::numeric, 6) END,
    CASE WHEN random() < 0.1 THEN NULL
         WHEN i % 997 = 0 THEN 'NaN'::float8
         WHEN i % 997 = 1 THEN 'Infinity'::float8
         WHEN i % 997 = 2 THEN '-Infinity'::float8
         WHEN i % 997 = 3 THEN '-0'::float8
         ELSE (random() - 0.5) * 1e6 END,
    CASE WHEN random() < 0.1 THEN NULL
         ELSE timestamptz '2000-01-01 00:00:00+00' + random() * interval '9000 days' END,
    CASE WHEN random() < 0.1 THEN NULL
         ELSE jsonb_build_object('i', i, 'h', md5(i::text), 'f', random(),
                                 'tags', jsonb_build_array('a', i % 7, true, NULL),
                                 'nested', jsonb_build_object('q', E'quote " back \\ nl \n tab \t', 'u', 'ü€')) END,
    CASE WHEN random() < 0.1 THEN NULL
         ELSE ARRAY['x' || (i % 100), 'with,comma', 'quote"d', E'back\\slash', NULL, md5(i::text)] END,
    CASE WHEN random() < 0.1 THEN NULL ELSE decode(md5(i::text), 'hex') || '\x00ff5c0a0d22'::bytea END,
    CASE WHEN random() < 0.1 THEN NULL ELSE md5(i::text || 'u')::uuid END
FROM generate_series(1, {ROWS}) AS i;
CREATE TABLE bench_marker (scale int NOT NULL, mixed_rows bigint NOT NULL, built_at timestamptz NOT NULL,
                           complete boolean NOT NULL);
"""


def mixed_rows_for(scale: int) -> int:
    return max(50_000 * scale, 100_000)


def source_ready(pg: Pg, db: str, scale: int, mixed: int) -> bool:
    if not pg.execute("postgres", "SELECT 1 FROM pg_database WHERE datname = %s", (db,)):
        return False
    try:
        rows = pg.execute(db, "SELECT scale, mixed_rows, complete FROM bench_marker")
    except psycopg2.Error:
        return False
    return rows == [(scale, mixed, True)]


def build_source(pg: Pg, db: str, scale: int, mixed: int) -> float:
    t0 = time.perf_counter()
    log(f"building {db}: pgbench -i -s {scale} (primary keys) + mixed table of {mixed:,} rows")
    pg.execute("postgres", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    pg.execute("postgres", f'CREATE DATABASE "{db}"')
    pg.tool("pgbench", "-i", "-s", str(scale), "-q", "-I", "dtgvp", db)
    conn = pg.connect(db)
    try:
        cur = conn.cursor()
        cur.execute(MIXED_SQL.replace("{ROWS}", str(int(mixed))))
        cur.execute("VACUUM (FREEZE, ANALYZE)")  # hint bits and visibility map set before anyone times a read
        cur.execute("INSERT INTO bench_marker VALUES (%s, %s, now(), true)", (scale, mixed))
        cur.execute("CHECKPOINT")
    finally:
        conn.close()
    took = time.perf_counter() - t0
    log(f"built {db} in {took:.1f} s")
    return took


def build_target(pg: Pg, source: str, target: str) -> None:
    pg.execute("postgres", f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
    pg.execute("postgres", f'CREATE DATABASE "{target}"')
    schema = pg.tool("pg_dump", "--schema-only", source).stdout
    pg.tool("psql", "-q", "-X", "-v", "ON_ERROR_STOP=1", "-d", target, "-f", "-", input=schema)


def user_tables(pg: Pg, db: str) -> list[str]:
    rows = pg.execute(db, "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                          "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1")
    return [r[0] for r in rows]


def truncate_all(pg: Pg, db: str) -> None:
    tables = user_tables(pg, db)
    if tables:
        pg.execute(db, "TRUNCATE " + ", ".join(tables))


QUIET = {"max_wait_s": 60.0, "threshold_cores": 0.5}


def busy_cores(window: float = 1.0) -> float:
    b0, t0 = machine_busy()
    time.sleep(window)
    b1, t1 = machine_busy()
    return (os.cpu_count() or 1) * (b1 - b0) / max(t1 - t0, 1)


def wait_quiet() -> dict:
    """Wait (up to --wait-idle seconds) until other work on this shared machine uses less than half a core, so
    a measurement does not share the 2 CPUs with someone's test run; how busy it was is recorded either way."""
    started = time.monotonic()
    load = busy_cores()
    while load > QUIET["threshold_cores"] and time.monotonic() - started < QUIET["max_wait_s"]:
        load = busy_cores()
    return {"busy_cores_before": round(load, 2), "waited_s": round(time.monotonic() - started, 1)}


# Informational, not a target: the diff of the unchanged source skips the server's join of row hashes (every
# table's hash sums agree); this shows the cost when tables did change. Run once, on the restore target after the
# oracle found it equal to the source (the target is recreated by the next run).
CHANGE_TARGET_SQL = (
    "UPDATE mixed SET t = coalesce(t, '') || 'x' WHERE id % 100 = 0",
    "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0",
    "DELETE FROM pgbench_accounts WHERE aid % 1000 = 1",
    "VACUUM (FREEZE, ANALYZE) mixed, pgbench_accounts",
)


def run_once(pg: Pg, op: str, args: dict, child_env, time_limit, what: str) -> dict:
    """One informational run of ours after a CHECKPOINT; a failure is logged and returned as {"error": …}."""
    quiet = checkpoint(pg)
    try:
        r = run_ours(op, args, child_env, time_limit)
    except HarnessError as exc:
        log(f"  {what} FAILED: {str(exc).strip().splitlines()[-1]}")
        return {"error": str(exc)[-3000:]}
    r.update(quiet)
    return r


def diff_of_changed_target(pg: Pg, target: str, path, child_env, time_limit) -> dict:
    for statement in CHANGE_TARGET_SQL:
        pg.execute(target, statement)
    expected = {
        "mixed": pg.execute(target, "SELECT count(*) FROM mixed WHERE id % 100 = 0")[0][0],
        "pgbench_accounts": pg.execute(target, "SELECT count(*) FROM pgbench_accounts WHERE aid % 100 = 0")[0][0],
    }
    r = run_once(pg, "diff", {"path": str(path), "url": pg.url(target)}, child_env, time_limit,
                 "calculate_diff of the changed target")
    if "error" in r:
        return r
    log(f"  calculate_diff of the target with ~1 % of mixed and pgbench_accounts changed: {r['time_s']:.2f} s  "
        f"rss {r['peak_rss_kb'] / 1024:.1f} MB  changes: {r['result']['tables_with_changes']}  "
        f"(rows changed there: {expected})")
    return r


def restore_into_populated_target(pg: Pg, target: str, path, child_env, time_limit) -> dict:
    """Informational: our restore into the target as it is (full of rows), which its transaction empties first.

    The timed restores of both tools start from the emptied target, because pg_restore --data-only needs one: a
    user of pg_restore runs the TRUNCATE first, a user of backup_tasks has it done inside the restore. Emptying
    tables of 3 M rows costs the server seconds of file-system time (freeing the old files) wherever it runs;
    this row shows our restore with that included."""
    r = run_once(pg, "restore", {"path": str(path), "url": pg.url(target)}, child_env, time_limit,
                 "restore_backup into the populated target")
    if "error" in r:
        return r
    log(f"  restore_backup into the populated target (its TRUNCATE included): {r['time_s']:.2f} s  "
        f"rss {r['peak_rss_kb'] / 1024:.1f} MB")
    return r


def checkpoint(pg: Pg) -> dict:
    """Flush dirty buffers outside the timings, so no measurement pays for the previous one's writes; then wait
    for the machine to be quiet."""
    pg.execute("postgres", "CHECKPOINT")
    return wait_quiet() if QUIET["max_wait_s"] > 0 else {}


def db_size(pg: Pg, db: str) -> int:
    return pg.execute("postgres", "SELECT pg_database_size(%s)", (db,))[0][0]


def oracle_compare(pg: Pg, source: str, target: str) -> dict:
    from tests.oracle import assert_same, snapshot

    t0 = time.perf_counter()
    a = snapshot(pg.url(source))
    b = snapshot(pg.url(target))
    try:
        assert_same(a, b)
        verdict, detail = "EQUAL", None
    except AssertionError as exc:
        verdict, detail = "DIFFERENT", str(exc)[:2000]
    return {"verdict": verdict, "detail": detail, "seconds": round(time.perf_counter() - t0, 1),
            "tables": {k: v[0] for k, v in a["tables"].items()}, "sequences": len(a["sequences"])}


# ------------------------------------------------------------------------------------------------ one scale
def bench_scale(pg: Pg, scale: int, reps: int, keep: bool, work: Path, child_env: dict,
                timeout_arg: float | None) -> dict:
    source, target = f"bench_s{scale}", f"bench_s{scale}_target"
    mixed = mixed_rows_for(scale)
    res: dict = {"scale": scale, "mixed_rows": mixed, "source": source, "target": target}
    if keep and source_ready(pg, source, scale, mixed):
        log(f"reusing {source} (marker row says complete)")
        res["built_s"] = None
    else:
        if keep:
            log(f"{source} is missing or incomplete: building it")
        res["built_s"] = round(build_source(pg, source, scale, mixed), 1)
    build_target(pg, source, target)
    res["source_bytes"] = db_size(pg, source)
    src_url, tgt_url = pg.url(source), pg.url(target)

    runs: dict[str, list[dict]] = {k: [] for k in ("pg_dump", "backup", "pg_restore", "restore", "diff")}
    oracle = None
    diff_clean: bool | None = True
    errors: dict[str, str] = {}
    def timeout() -> float:
        """--timeout, or 10 x the slowest pg_dump/pg_restore so far (at least 60 s): a hang is reported, not waited
        for forever."""
        if timeout_arg:
            return timeout_arg
        ref = [r["time_s"] for k in ("pg_dump", "pg_restore") for r in runs[k]]
        return max(60.0, 10 * max(ref, default=30.0))

    for rep in range(reps):
        ours_first = rep % 2 == 1  # ABBA: neither side always runs on the other's warm-up
        rep_dir = work / f"s{scale}_rep{rep}"
        rep_dir.mkdir(parents=True, exist_ok=True)
        dump_file = rep_dir / "pg_dump.custom"

        def do_pg_dump():
            quiet = checkpoint(pg)
            r = run_tool(["pg_dump", "-Fc", "--data-only", "-f", str(dump_file), source], pg.env)
            r.update(quiet)
            r["output_bytes"] = dump_file.stat().st_size
            runs["pg_dump"].append(r)
            log(f"  s{scale} rep {rep + 1}/{reps} pg_dump -Fc      {r['time_s']:7.2f} s  "
                f"{r['output_bytes'] / MiB:7.1f} MB  rss {r['peak_rss_kb'] / 1024:6.1f} MB{noise(r)}")

        ours_file: list[Path] = []

        def do_backup():
            quiet = checkpoint(pg)
            r = run_ours("backup", {"out": str(rep_dir), "url": src_url}, child_env, timeout())
            r.update(quiet)
            r["output_bytes"] = Path(r["result"]["path"]).stat().st_size
            ours_file.append(Path(r["result"]["path"]))
            runs["backup"].append(r)
            log(f"  s{scale} rep {rep + 1}/{reps} run_backup       {r['time_s']:7.2f} s  "
                f"{r['output_bytes'] / MiB:7.1f} MB  rss {r['peak_rss_kb'] / 1024:6.1f} MB  "
                f"(+{r['startup_s']:.2f} s start-up){noise(r)}")

        for step in ((do_backup, do_pg_dump) if ours_first else (do_pg_dump, do_backup)):
            step()

        def do_pg_restore():
            truncate_all(pg, target)
            quiet = checkpoint(pg)
            r = run_tool(["pg_restore", "--data-only", "--single-transaction", "--disable-triggers",
                          "-d", target, str(dump_file)], pg.env)
            r.update(quiet)
            runs["pg_restore"].append(r)
            log(f"  s{scale} rep {rep + 1}/{reps} pg_restore -1    {r['time_s']:7.2f} s  "
                f"rss {r['peak_rss_kb'] / 1024:6.1f} MB{noise(r)}")

        def do_restore():
            nonlocal oracle
            truncate_all(pg, target)  # the same starting point as pg_restore's (see restore_into_populated_target)
            quiet = checkpoint(pg)
            try:
                r = run_ours("restore", {"path": str(ours_file[0]), "url": tgt_url}, child_env, timeout())
            except HarnessError as exc:
                errors.setdefault("restore", str(exc)[-3000:])
                log(f"  s{scale} rep {rep + 1}/{reps} restore_backup   FAILED: {str(exc).strip().splitlines()[-1]}")
                return
            r.update(quiet)
            runs["restore"].append(r)
            log(f"  s{scale} rep {rep + 1}/{reps} restore_backup   {r['time_s']:7.2f} s  "
                f"rss {r['peak_rss_kb'] / 1024:6.1f} MB  ({r['result']['restored_rows']:,} rows){noise(r)}")
            if rep == reps - 1:  # compare right away, before pg_restore may overwrite the target
                log("  oracle: comparing source and target (count + md5 of sorted rows, sequences)")
                oracle = oracle_compare(pg, source, target)
                log(f"  oracle: {oracle['verdict']} ({oracle['seconds']} s)")

        for step in ((do_restore, do_pg_restore) if ours_first else (do_pg_restore, do_restore)):
            step()

        quiet = checkpoint(pg)
        try:
            r = run_ours("diff", {"path": str(ours_file[0]), "url": src_url}, child_env, timeout())
            r.update(quiet)
        except HarnessError as exc:  # an engine failure is a result to report, not a reason to stop measuring
            errors.setdefault("diff", str(exc)[-3000:])
            log(f"  s{scale} rep {rep + 1}/{reps} calculate_diff   FAILED: {str(exc).strip().splitlines()[-1]}")
        else:
            runs["diff"].append(r)
            if r["result"]["tables_with_changes"]:
                diff_clean = False
            log(f"  s{scale} rep {rep + 1}/{reps} calculate_diff   {r['time_s']:7.2f} s  "
                f"rss {r['peak_rss_kb'] / 1024:6.1f} MB  "
                f"changes: {r['result']['tables_with_changes'] or 'none'}{noise(r)}")
        if rep == reps - 1 and ours_file and oracle and oracle.get("verdict") == "EQUAL":
            res["diff_changed"] = diff_of_changed_target(pg, target, ours_file[0], child_env, timeout())
            res["restore_populated"] = restore_into_populated_target(pg, target, ours_file[0], child_env, timeout())
        shutil.rmtree(rep_dir, ignore_errors=True)

    res["runs"] = runs
    res["errors"] = errors
    if not runs["diff"]:
        diff_clean = None
    res["oracle"] = oracle
    res["diff_of_unchanged_db_is_empty"] = diff_clean
    res["total_rows"] = runs["backup"][0]["result"]["total_rows"] if runs["backup"] else None
    res["compression_level"] = runs["backup"][0]["result"]["compression_level"] if runs["backup"] else None
    res["medians"] = {
        op: None if not rs else {"time_s": med(rs, "time_s"), "wall_s": med(rs, "wall_s"), "cpu_s": med(rs, "cpu_s"),
             "peak_rss_mb": (med(rs, "peak_rss_kb") or 0) / 1024, "output_mb": (med(rs, "output_bytes") or 0) / MiB
             if any("output_bytes" in r for r in rs) else None,
             "startup_s": med(rs, "startup_s"), "all_time_s": [round(r["time_s"], 3) for r in rs],
             "busy_cores_before": [r.get("busy_cores_before") for r in rs],
             "busy_cores_during": [r.get("machine_busy_cores") for r in rs]}
        for op, rs in runs.items()
    }
    return res


# ------------------------------------------------------------------------------------------------ report
def fmt(v, spec=".2f", none="-") -> str:
    return none if v is None else format(v, spec)


def evaluate(results: list[dict], celery: dict | None) -> tuple[list[list[str]], list[dict]]:
    """Table rows and the list of targets with their verdicts."""
    rows: list[list[str]] = []
    targets: list[dict] = []

    def target(name: str, value, limit, ok: bool | None, note: str = "") -> str:
        targets.append({"target": name, "value": value, "limit": limit, "met": ok, "note": note})
        return "n/a" if ok is None else ("yes" if ok else "NO")

    for res in results:
        m = res["medians"]
        s = res["scale"]
        pd, bk, pr, rs, df = (m[k] for k in ("pg_dump", "backup", "pg_restore", "restore", "diff"))
        rows.append([f"scale {s}: pg_dump -Fc --data-only", fmt(pd["time_s"]), "1.00", fmt(pd["output_mb"], ".1f"),
                     "1.00", fmt(pd["peak_rss_mb"], ".1f"), "(reference)", ""])
        t_ratio = bk["time_s"] / pd["time_s"]
        s_ratio = bk["output_mb"] / pd["output_mb"]
        ok_t = target(f"s{s} backup time", round(t_ratio, 3), T_BACKUP_TIME, t_ratio <= T_BACKUP_TIME) == "yes"
        ok_s = target(f"s{s} backup size", round(s_ratio, 3), T_BACKUP_SIZE, s_ratio <= T_BACKUP_SIZE) == "yes"
        ok_m = target(f"s{s} backup peak RSS MB", round(bk["peak_rss_mb"], 1), T_RSS_MB,
                      bk["peak_rss_mb"] <= T_RSS_MB) == "yes"
        rows.append([f"scale {s}: run_backup", fmt(bk["time_s"]), fmt(t_ratio), fmt(bk["output_mb"], ".1f"),
                     fmt(s_ratio), fmt(bk["peak_rss_mb"], ".1f"),
                     f"time<={T_BACKUP_TIME}x size<={T_BACKUP_SIZE}x rss<={T_RSS_MB:.0f}",
                     _met(("time", ok_t), ("size", ok_s), ("rss", ok_m))])
        rows.append([f"scale {s}: pg_restore --data-only -1", fmt(pr["time_s"]), "1.00", "", "",
                     fmt(pr["peak_rss_mb"], ".1f"), "(reference)", ""])
        oracle = (res.get("oracle") or {}).get("verdict", "not run")
        ok_o = target(f"s{s} oracle after restore", oracle, "EQUAL", oracle == "EQUAL") == "yes"
        if rs is None:
            err = _last_line(res["errors"].get("restore", "failed"))
            target(f"s{s} restore time", None, T_RESTORE_TIME, False, "failed: " + err)
            target(f"s{s} restore peak RSS MB", None, T_RSS_MB, False, "failed")
            rows.append([f"scale {s}: restore_backup", "FAILED", "", "", "", "",
                         f"time<={T_RESTORE_TIME}x rss<={T_RSS_MB:.0f} oracle", "NO (failed: " + err + ")"])
        else:
            r_ratio = rs["time_s"] / pr["time_s"]
            ok_t = target(f"s{s} restore time", round(r_ratio, 3), T_RESTORE_TIME,
                          r_ratio <= T_RESTORE_TIME) == "yes"
            ok_m = target(f"s{s} restore peak RSS MB", round(rs["peak_rss_mb"], 1), T_RSS_MB,
                          rs["peak_rss_mb"] <= T_RSS_MB) == "yes"
            rows.append([f"scale {s}: restore_backup", fmt(rs["time_s"]), fmt(r_ratio), "", "",
                         fmt(rs["peak_rss_mb"], ".1f"), f"time<={T_RESTORE_TIME}x rss<={T_RSS_MB:.0f} oracle",
                         _met(("time", ok_t), ("rss", ok_m), ("oracle", ok_o)) + f"; oracle {oracle}"])
        if df is None:
            err = _last_line(res["errors"].get("diff", "failed"))
            target(f"s{s} diff time vs our backup", None, T_DIFF_TIME, False, "failed: " + err)
            target(f"s{s} diff peak RSS MB", None, T_RSS_MB, False, "failed")
            rows.append([f"scale {s}: calculate_diff (detailed)", "FAILED", "", "", "", "",
                         f"time<={T_DIFF_TIME}x backup rss<={T_RSS_MB:.0f}", "NO (failed: " + err + ")"])
        else:
            d_ratio = df["time_s"] / bk["time_s"]
            ok_t = target(f"s{s} diff time vs our backup", round(d_ratio, 3), T_DIFF_TIME,
                          d_ratio <= T_DIFF_TIME) == "yes"
            ok_m = target(f"s{s} diff peak RSS MB", round(df["peak_rss_mb"], 1), T_RSS_MB,
                          df["peak_rss_mb"] <= T_RSS_MB) == "yes"
            rows.append([f"scale {s}: calculate_diff (detailed)", fmt(df["time_s"]), fmt(d_ratio) + " xbk", "", "",
                         fmt(df["peak_rss_mb"], ".1f"), f"time<={T_DIFF_TIME}x backup rss<={T_RSS_MB:.0f}",
                         _met(("time", ok_t), ("rss", ok_m))])
        populated = res.get("restore_populated")
        if populated and "time_s" in populated and pr:
            rows.append([f"scale {s}: restore_backup, target not emptied", fmt(populated["time_s"]),
                         fmt(populated["time_s"] / pr["time_s"]), "", "", fmt(populated["peak_rss_kb"] / 1024, ".1f"),
                         "(informational, once)", ""])
        changed = res.get("diff_changed")
        if changed and "time_s" in changed:
            rows.append([f"scale {s}: calculate_diff, ~1% rows changed", fmt(changed["time_s"]),
                         fmt(changed["time_s"] / bk["time_s"]) + " xbk", "", "",
                         fmt(changed["peak_rss_kb"] / 1024, ".1f"), "(informational, once)", ""])

    if len(results) >= 2:
        lo, hi = results[0], results[-1]
        growth = hi["total_rows"] / lo["total_rows"]
        for op, label in (("backup", "run_backup"), ("restore", "restore_backup"), ("diff", "calculate_diff")):
            a, b = lo["medians"][op], hi["medians"][op]
            if a is None or b is None:
                target(f"{op} RSS growth s{lo['scale']}->s{hi['scale']}", None, T_RSS_FLAT, False, "failed")
                target(f"{op} time-per-row ratio s{lo['scale']}->s{hi['scale']}", None, T_LINEAR, False, "failed")
                rows.append([f"growth s{lo['scale']}->s{hi['scale']}: {label}", "FAILED", "", "", "", "",
                             f"rss<={T_RSS_FLAT}x t/row<={T_LINEAR}x", "NO (failed)"])
                continue
            rss_ratio = b["peak_rss_mb"] / a["peak_rss_mb"]
            per_row = (b["time_s"] / hi["total_rows"]) / (a["time_s"] / lo["total_rows"])
            ok_r = target(f"{op} RSS growth s{lo['scale']}->s{hi['scale']}", round(rss_ratio, 3), T_RSS_FLAT,
                          rss_ratio <= T_RSS_FLAT) == "yes"
            ok_l = target(f"{op} time-per-row ratio s{lo['scale']}->s{hi['scale']}", round(per_row, 3), T_LINEAR,
                          per_row <= T_LINEAR) == "yes"
            rows.append([f"growth s{lo['scale']}->s{hi['scale']} ({growth:.1f}x rows): {label}",
                         f"{a['time_s']:.2f}->{b['time_s']:.2f}", f"{per_row:.2f} t/row", "", "",
                         f"{a['peak_rss_mb']:.0f}->{b['peak_rss_mb']:.0f} ({rss_ratio:.3f}x)",
                         f"rss<={T_RSS_FLAT}x t/row<={T_LINEAR}x", _met(("rss", ok_r), ("linear", ok_l))])
        for op, label in (("pg_dump", "pg_dump"), ("pg_restore", "pg_restore")):
            a, b = lo["medians"][op], hi["medians"][op]
            per_row = (b["time_s"] / hi["total_rows"]) / (a["time_s"] / lo["total_rows"])
            rows.append([f"growth s{lo['scale']}->s{hi['scale']}: {label}", f"{a['time_s']:.2f}->{b['time_s']:.2f}",
                         f"{per_row:.2f} t/row", "", "", f"{a['peak_rss_mb']:.0f}->{b['peak_rss_mb']:.0f}",
                         "(reference)", ""])

    if celery is not None:
        c = celery
        if c.get("overhead_s") is not None:
            ok = target("celery queue overhead s", round(c["overhead_s"], 3), T_QUEUE_S, c["overhead_s"] <= T_QUEUE_S,
                        f"warm worker; first job of a fresh worker: +{c['first_overhead_s']:.2f} s")
            rows.append([f"celery {c.get('task')} job (round trip)", fmt(c["round_trip_s"]),
                         f"+{c['overhead_s']:.2f} s", "", "", "", f"overhead<={T_QUEUE_S} s",
                         f"{ok} (first job of a fresh worker: +{c['first_overhead_s']:.2f} s)"])
        else:
            target("celery queue overhead s", None, T_QUEUE_S, None, c.get("skipped", ""))
            rows.append(["celery create job", "-", "-", "", "", "", f"overhead<={T_QUEUE_S} s",
                         "skipped: " + str(c.get("skipped", ""))[:70]])
    return rows, targets


def _last_line(text: str, width: int = 90) -> str:
    lines = text.strip().splitlines() or ["failed"]
    return lines[-1][:width]


def _met(*checks: tuple[str, bool]) -> str:
    failed = [name for name, ok in checks if not ok]
    return "yes" if not failed else "NO (" + ", ".join(failed) + ")"


def print_table(rows: list[list[str]]) -> str:
    head = ["operation", "median s", "ratio vs pg", "output MB", "size ratio", "peak RSS MB", "target", "met?"]
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths)),
             "-|-".join("-" * w for w in widths)]
    for r in rows:
        lines.append(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    return "\n".join(line.rstrip() for line in lines)


# ------------------------------------------------------------------------------------------------ profile
def profile_phases(pg: Pg, scale: int, work: Path, child_env: dict, results_dir: Path, top: int,
                   timeout: float) -> dict:
    source, target = f"bench_s{scale}", f"bench_s{scale}_target"
    pdir = work / "profile"
    pdir.mkdir(parents=True, exist_ok=True)
    out: dict = {"scale": scale, "tool": "cProfile in every thread (wall-clock; waits show as lock acquire)"}
    stats_dir = results_dir / "profile"
    stats_dir.mkdir(parents=True, exist_ok=True)
    checkpoint(pg)
    b = run_ours("backup", {"out": str(pdir), "url": pg.url(source), "profile": str(stats_dir / "backup"),
                            "top": top}, child_env, timeout)
    path = b["result"]["path"]
    checkpoint(pg)
    r = run_ours("restore", {"path": path, "url": pg.url(target), "profile": str(stats_dir / "restore"),
                             "top": top}, child_env, timeout)
    checkpoint(pg)
    try:
        d = run_ours("diff", {"path": path, "url": pg.url(source), "profile": str(stats_dir / "diff"), "top": top},
                     child_env, timeout)
    except HarnessError as exc:
        d = None
        out["diff"] = {"error": str(exc)[-1500:]}
    for name, run in (("backup", b), ("restore", r), ("diff", d)):
        if run is not None:
            out[name] = {"seconds_under_profiler": run["time_s"], **run["profile"]}
    out["engine"] = sorted({run["engine"] for run in (b, r, d) if run is not None})
    pyspy = pyspy_path()
    if pyspy:
        out["py_spy"] = {}
        for name, op, args in (("backup", "backup", {"out": str(pdir), "url": pg.url(source)}),
                               ("restore", "restore", {"path": path, "url": pg.url(target)}),
                               ("diff", "diff", {"path": path, "url": pg.url(source)})):
            raw = stats_dir / f"{name}.pyspy.txt"
            checkpoint(pg)
            proc = subprocess.Popen([pyspy, "record", "--format", "raw", "--threads", "--rate", "200",
                                     "--nonblocking", "--output", str(raw), "--", sys.executable, str(CHILD), op,
                                     json.dumps(args)], env=child_env, cwd=REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, start_new_session=True)
            note = None
            try:
                text, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)  # py-spy and the operation it runs, both started here
                text, _ = proc.communicate()
                note = f"the operation hung and was killed after {timeout:.0f} s"
            if not raw.exists() or not raw.stat().st_size:
                out["py_spy"][name] = {"error": (text or "")[-500:] or note or "no samples"}
                continue
            out["py_spy"][name] = summarise_pyspy(raw, top)
            if note or proc.returncode != 0:
                out["py_spy"][name]["note"] = note or "the operation failed; samples up to the failure"
    shutil.rmtree(pdir, ignore_errors=True)
    return out


# Frames every stack shares (thread start-up, the child's entry point, the import machinery): not informative.
_PYSPY_NOISE = ("<frozen importlib", "(threading.py:", "(_child.py:")


def summarise_pyspy(raw: Path, top: int) -> dict:
    """Self and inclusive sample shares from py-spy's collapsed stacks (active samples only: idle is excluded)."""
    self_counts: dict[str, int] = {}
    incl: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        n = int(n)
        frames = stack.split(";")
        total += n
        thread = frames[0] if frames[0].startswith(("thread", "process")) else "?"
        pyframes = [f for f in frames if not f.startswith(("thread", "process"))]
        threads[thread] = threads.get(thread, 0) + n
        if pyframes:
            leaf = pyframes[-1]
            self_counts[leaf] = self_counts.get(leaf, 0) + n
        for f in set(pyframes):
            if not any(noise in f for noise in _PYSPY_NOISE):
                incl[f] = incl.get(f, 0) + n
    total = total or 1
    return {
        "samples": total,
        "threads": {k: round(v / total, 3) for k, v in sorted(threads.items(), key=lambda kv: -kv[1])},
        "top_self": [(k, round(v / total, 3)) for k, v in sorted(self_counts.items(), key=lambda kv: -kv[1])[:top]],
        "top_inclusive": [(k, round(v / total, 3)) for k, v in sorted(incl.items(), key=lambda kv: -kv[1])[:top]],
    }


def print_profile(prof: dict) -> None:
    print(f"\n=== profile at scale {prof['scale']}: {prof['tool']}; engine source {', '.join(prof['engine'])} ===")
    for name in ("backup", "restore", "diff"):
        p = prof[name]
        if "error" in p:
            print(f"\n--- {name}: FAILED: {p['error'].strip().splitlines()[-1]}")
            continue
        print(f"\n--- {name}: {p['seconds_under_profiler']:.2f} s under the profiler; threads: "
              + ", ".join(f"{t['thread']} {t['wall_s']:.1f} s" for t in p["threads"]))
        print(f"top {len(p['top_self'])} by self time (all threads):")
        print(f"  {'thread':<28} {'self s':>7} {'cum s':>7} {'calls':>9}  function")
        for r in p["top_self"]:
            print(f"  {r['thread'][:28]:<28} {r['self_s']:7.2f} {r['cum_s']:7.2f} {r['calls']:9d}  {r['function']}")
        print(f"top {len(p['top_cum_main'])} by cumulative time (main thread):")
        for r in p["top_cum_main"]:
            print(f"  {'MainThread':<28} {r['self_s']:7.2f} {r['cum_s']:7.2f} {r['calls']:9d}  {r['function']}")
    for name, s in (prof.get("py_spy") or {}).items():
        print(f"\n--- py-spy {name} (share of active samples over the whole process, imports included, all "
              f"threads, idle excluded){' - ' + s['note'] if s.get('note') else ''}")
        if "error" in s:
            print("  py-spy failed: " + s["error"])
            continue
        print("  threads: " + ", ".join(f"{k} {v:.0%}" for k, v in s["threads"].items()))
        print("  self:")
        for k, v in s["top_self"]:
            print(f"    {v:6.1%}  {k}")
        print("  inclusive:")
        for k, v in s["top_inclusive"]:
            print(f"    {v:6.1%}  {k}")


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, action="append", help="pgbench scale (repeatable); default 20")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each measurement (median); default 3")
    ap.add_argument("--json", type=Path, default=BENCH / "results" / "latest.json", help="where to write results")
    ap.add_argument("--keep-db", action="store_true", help="reuse bench_sN when its marker row says it is complete")
    ap.add_argument("--celery", action="store_true",
                    help="also time create jobs through a Celery worker (a running one, else a temporary one)")
    ap.add_argument("--no-start-worker", action="store_true",
                    help="with --celery: skip when no worker answers instead of starting a temporary one on a "
                         "private queue")
    ap.add_argument("--celery-task", help="name of the Celery task that creates a backup (default: discovered)")
    ap.add_argument("--profile", action="store_true",
                    help="after measuring, run backup, restore and diff once under cProfile (every thread) at the "
                         "largest scale, plus py-spy when installed, and print what dominates")
    ap.add_argument("--profile-only", action="store_true", help="only build/reuse the databases and profile")
    ap.add_argument("--timeout", type=float, default=None,
                    help="kill one of our operations after this many seconds (default: 10 x the slowest "
                         "pg_dump/pg_restore of that scale, at least 60 s; 600 s when profiling); a hang is "
                         "reported with a py-spy dump")
    ap.add_argument("--live-engine", action="store_true",
                    help="import backup_tasks from the working tree for each measurement, instead of from a copy "
                         "taken when the run starts (others' edits during the run would then mix versions)")
    ap.add_argument("--wait-idle", type=float, default=60.0,
                    help="before each measurement wait up to this many seconds for other work on the machine to use "
                         "less than half a CPU (default 60; 0 disables); the load seen is recorded")
    ap.add_argument("--top", type=int, default=15, help="functions listed per profile (default 15)")
    ap.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432"),
                    help="server to use, without database name (env BENCH_PG_URL)")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch directory for dump files (default: a temp dir)")
    args = ap.parse_args(argv)
    scales = sorted(set(args.scale or [20]))
    if args.profile_only:
        args.profile = True
    if args.reps < 1 and not args.profile_only:
        ap.error("--reps must be at least 1")

    QUIET["max_wait_s"] = max(args.wait_idle, 0.0)
    pg = Pg(args.pg_url)
    for tool in ("pg_dump", "pg_restore", "pgbench", "psql"):
        if not shutil.which(tool):
            print(f"error: {tool} is not on PATH", file=sys.stderr)
            return 2
    try:
        server = pg.execute("postgres", "SHOW server_version")[0][0]
    except psycopg2.Error as exc:
        print(f"error: cannot connect to {args.pg_url}: {str(exc).strip()}", file=sys.stderr)
        return 2
    child_env = dict(os.environ)
    child_env.pop("PYTHONPATH", None)
    results_dir = args.json.parent
    results_dir.mkdir(parents=True, exist_ok=True)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="backup_tasks_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    live_start = engine_fingerprint(REPO)
    git = git_state()
    if not args.live_engine:
        ENGINE_ROOT[0] = snapshot_engine(work)
        child_env["PYTHONPATH"] = str(ENGINE_ROOT[0])  # also for a temporary Celery worker
    child_env["BENCH_ENGINE_DIR"] = str(ENGINE_ROOT[0])

    doc: dict = {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git": git,
        "engine": {"source": "working tree (--live-engine)" if args.live_engine else
                   "copy of the working tree taken at the start", "fingerprint": engine_fingerprint(),
                   "working_tree_fingerprint_at_start": live_start},
        "argv": sys.argv[1:],
        "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg(), "python": platform.python_version(),
                    "server_version": server, "pg_dump": pg.tool("pg_dump", "--version").stdout.strip(),
                    "kernel": platform.release()},
        "method": ("median of --reps alternating runs (ABBA order); our time = the library call in a fresh "
                   "interpreter (start-up and imports reported separately as startup_s); pg tools = process wall "
                   "time; peak RSS = VmHWM of that very process, or the sum of its and its children's RSS if larger; "
                   "a CHECKPOINT precedes every measurement"),
        "targets_limits": {"backup_time_x_pg_dump": T_BACKUP_TIME, "backup_size_x_pg_dump": T_BACKUP_SIZE,
                           "restore_time_x_pg_restore": T_RESTORE_TIME, "diff_time_x_backup": T_DIFF_TIME,
                           "peak_rss_mb": T_RSS_MB, "rss_growth_x": T_RSS_FLAT, "time_per_row_growth_x": T_LINEAR,
                           "queue_overhead_s": T_QUEUE_S},
        "scales": [],
    }
    exit_code = 0
    try:
        results = []
        if not args.profile_only:
            for scale in scales:
                results.append(bench_scale(pg, scale, args.reps, args.keep_db, work, child_env, args.timeout))
                doc["scales"] = results
                _write(args.json, doc)
        else:
            for scale in scales[-1:]:
                src = f"bench_s{scale}"
                if not (args.keep_db and source_ready(pg, src, scale, mixed_rows_for(scale))):
                    build_source(pg, src, scale, mixed_rows_for(scale))
                build_target(pg, src, f"bench_s{scale}_target")

        celery = None
        if args.celery:
            scale = scales[-1]
            cdir = work / "celery"
            cdir.mkdir(parents=True, exist_ok=True)
            log(f"celery: one create job of bench_s{scale} through a worker")
            cargs = {"out": str(cdir), "url": pg.url(f"bench_s{scale}"), "start_worker": not args.no_start_worker}
            if args.celery_task:
                cargs["task"] = args.celery_task
            try:
                c = run_ours("celery", cargs, child_env, args.timeout or 1800.0)
                celery = c["result"]
            except HarnessError as exc:
                celery = {"skipped": f"the client failed: {str(exc)[-300:]}"}
            log(f"celery: {json.dumps(celery, default=str)}")
            doc["celery"] = celery

        if results:
            rows, targets = evaluate(results, celery)
            doc["targets"] = targets
            doc["machine"]["loadavg_end"] = os.getloadavg()
            table = print_table(rows)
            doc["table"] = table
            print()
            for res in results:
                m = res["medians"]
                print(f"scale {res['scale']}: {res['total_rows']:,} rows ({res['mixed_rows']:,} in mixed), source "
                      f"{res['source_bytes'] / MiB:.0f} MB on disk, {args.reps} reps, our compression level "
                      f"{res['compression_level']}; our process start-up + imports (not in the times): "
                      f"{fmt(m['backup']['startup_s'])} s; oracle {(res['oracle'] or {}).get('verdict')}; "
                      f"diff of the unchanged database empty: {res['diff_of_unchanged_db_is_empty']}")
                before = [r.get("busy_cores_before") for rs in res["runs"].values() for r in rs
                          if r.get("busy_cores_before") is not None]
                if before:
                    print(f"  other load on the {os.cpu_count()} CPUs just before each measurement: median "
                          f"{statistics.median(before):.2f}, max {max(before):.2f} cores (waited up to "
                          f"{QUIET['max_wait_s']:.0f} s for < {QUIET['threshold_cores']} before each)")
            print(f"machine: {os.cpu_count()} CPUs, load average {doc['machine']['loadavg_start'][0]:.2f} at start, "
                  f"{doc['machine']['loadavg_end'][0]:.2f} at end; PostgreSQL {server}")
            doc["engines_seen"] = ENGINES_SEEN
            live_end = engine_fingerprint(REPO)
            doc["engine"]["working_tree_fingerprint_at_end"] = live_end
            changed = " (the tree has changed since)" if live_end != live_start else ""
            where = ("the working tree" if args.live_engine
                     else f"a copy of the working tree taken at the start{changed}")
            if len(ENGINES_SEEN) > 1:
                print("WARNING: the engine's source changed during this run (someone edited backup_tasks/): "
                      "the figures mix versions " + ", ".join(f"{k} ({len(v)} ops)" for k, v in ENGINES_SEEN.items())
                      + "; run again for a clean table")
            else:
                print(f"engine: git {git['head']}{' + uncommitted changes' if git['engine_dirty'] else ''}, "
                      f"source fingerprint {next(iter(ENGINES_SEEN), '?')}, imported from {where}")
            print(table)
            unmet = [t["target"] for t in targets if t["met"] is False]
            verdict = "ALL TARGETS MET" if not unmet else "TARGETS NOT MET: " + "; ".join(unmet)
            print(verdict)
            doc["verdict"] = verdict
            if any((r.get("oracle") or {}).get("verdict") != "EQUAL" for r in results):
                exit_code = 1

        if args.profile:
            log(f"profiling at scale {scales[-1]}")
            prof = profile_phases(pg, scales[-1], work, child_env, results_dir, args.top, args.timeout or 600.0)
            doc["profile"] = prof
            print_profile(prof)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        doc["error"] = str(exc)
        exit_code = 2
    finally:
        doc["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        _write(args.json, doc)
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nresults written to {args.json}")
    return exit_code


def _write(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
