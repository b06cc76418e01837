"""One dataset from start to end: build or reuse it, start its worker, make its keys, run every operation,
check the restores, clean up what was made (the databases too, unless --keep-db)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import datasets, operations, ours
from .context import DatasetRun
from .datasets import Dataset
from .engine import Engine
from .oracle_check import Oracle
from .pg import Pg
from .quiet import Quiet
from .runner import Runner
from .worker import PrivateRedis, RedisDb, Worker


@dataclass
class Harness:
    opts: object                 # options.Options
    pg: Pg
    engine: Engine
    quiet: Quiet
    work: Path
    log: Callable[[str], None]
    redis: RedisDb | PrivateRedis | None = None
    postmaster_pid: int | None = None

    @property
    def warm_db(self) -> str:
        return datasets.prefix(self.opts) + "warmup"


def bench_dataset(h: Harness, ds: Dataset) -> dict:
    datasets.prepare(h.pg, ds, h.opts.keep_db, h.log)
    ops, skipped = operations.for_dataset(ds.kind, h.engine.features, h.opts.only)
    run = DatasetRun(h.pg, ds, h.engine, dir=_fresh(h.work / ds.db), backup_dir=_fresh(h.work / ds.db / "backups"),
                     broker=h.redis.url if h.redis else None, postmaster_pid=h.postmaster_pid)
    ops = _with_keys(run, ops, skipped)
    worker: list[Worker] = []
    runner = Runner(run, h.quiet, Oracle(run.source_url), h.log, h.opts.timeout)
    runner.on_queued_timeout = lambda: _restart(h, run, worker)
    try:
        if any(op.queued for op in ops):
            worker.append(start_worker(h, run))
        runner.run_groups(ops, h.opts.reps)
    finally:
        if worker:
            worker[0].stop()
        shutil.rmtree(run.dir, ignore_errors=True)
        datasets.drop(h.pg, ds, h.opts.keep_db)
    return {"kind": ds.kind, "label": ds.label, "db": ds.db, "params": ds.params, "scale": ds.scale,
            "facts": ds.facts, "skipped": skipped, "runs": runner.results, "oracle": runner.oracle_verdicts}


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _with_keys(run: DatasetRun, ops: list, skipped: dict) -> list:
    """The age-encrypted operations need a key pair from `backupctl keygen`; without one they are skipped."""
    if not any(op.needs == "keygen" for op in ops):
        return ops
    keys = ours.make_keys(run, run.dir)
    if isinstance(keys, str):
        for op in ops:
            if op.needs == "keygen":
                skipped[op.key] = "not available: " + keys
        return [op for op in ops if op.needs != "keygen"]
    run.keys = keys
    return ops


def start_worker(h: Harness, run: DatasetRun) -> Worker:
    t0 = time.monotonic()
    w = Worker(h.engine, run.ours_env(), cwd=run.dir, log=run.dir / "worker.log").wait_ready()
    run.worker_pid = w.pid
    t1 = time.monotonic()
    warm_up(h, run)
    h.log(f"worker for {run.ds.db}: 2 processes, {h.redis.where}; ready in {t1 - t0:.1f} s, "
          f"warmed up in {time.monotonic() - t1:.1f} s")
    return w


def _restart(h: Harness, run: DatasetRun, worker: list[Worker]) -> None:
    """A queued command killed for hanging leaves its job running on the worker: a new worker, then."""
    if worker:
        worker[0].stop()
        worker[0] = start_worker(h, run)


def warm_up(h: Harness, run: DatasetRun) -> None:
    """Tiny jobs, two at a time so both pool processes get one: the measured jobs then find the imports done,
    as on a worker that has been running for a while. Two databases, as a restore holds one exclusively."""
    ctl, env = h.engine.backupctl(), run.ours_env()
    a, b = h.pg.url(h.warm_db), h.pg.url(h.warm_db + "_target")
    def pair(first: list[str], second: list[str]) -> list[str]:
        return _pair(h.log, ctl, env, run.dir, first, second)

    made = pair(["create", "--database-url", a], ["create", "--database-url", a])
    names = [p.name for p in (ours.saved_to(out, run.backup_dir) for out in made) if p]
    if len(names) == 2:
        pair(["diff", names[0], "--database-url", a], ["diff", names[1], "--database-url", b])
        pair(["restore", names[0], "--yes", "--database-url", a], ["restore", names[1], "--yes", "--database-url", b])
    if h.engine.features.get("jobs"):
        made += pair(["create", "--jobs", "2", "--database-url", a], ["create", "--database-url", b])
    names = [p.name for p in (ours.saved_to(out, run.backup_dir) for out in made) if p]
    for name in names:
        ours.remove_backup(run.backup_dir / name)


def _pair(log, ctl: list[str], env: dict, cwd: Path, first: list[str], second: list[str]) -> list[str]:
    procs = [subprocess.Popen(ctl + args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for args in (first, second)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out, args in zip(procs, outs, (first, second)):
        if p.returncode != 0:  # the measured runs of the same kind will fail and show why
            log(f"  warm-up `backupctl {' '.join(args)}` failed (exit {p.returncode}): {out.strip()[-300:]}")
    return outs


def make_warm_dbs(h: Harness) -> None:
    h.pg.create(h.warm_db)
    h.pg.execute(h.warm_db, "CREATE TABLE warm (id int PRIMARY KEY, t text); "
                            "INSERT INTO warm SELECT g, 'row ' || g FROM generate_series(1, 100) g")
    h.pg.create(h.warm_db + "_target")
    h.pg.execute(h.warm_db + "_target", "CREATE TABLE warm (id int PRIMARY KEY, t text)")


def drop_warm_dbs(h: Harness) -> None:
    h.pg.drop(h.warm_db)
    h.pg.drop(h.warm_db + "_target")
