"""A worker pool process does not carry one job's memory into the next (shipped defaults).

Measured before the fix, on this table: the pool process held 84 MB after a backup and 94 MB after a diff, and
every later job started from there (glibc keeps freed heap below its trim threshold, Python keeps its arenas).
Now the task returns freed memory after each job (malloc_trim) and a process still holding more than
CELERY_WORKER_MAX_MEMORY_PER_CHILD_MB (90) is replaced by a fresh one (~65 MB) before the next job.

Holding, not peak: Celery compared the process's peak (ru_maxrss), which every ordinary job takes above the
limit, so every job replaced its process, and a queued command sometimes waited seconds for the new one
(celery#9588; celery_app._recycle_by_memory_held). Backups in a row now run in one process.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.celery_worker import *  # noqa: F403
from tests.celery_worker import Worker, backupctl
from tests.conftest import run_sql, wait_for

pytestmark = [pytest.mark.celery, pytest.mark.slow]

LIMIT_MB = 90  # the shipped CELERY_WORKER_MAX_MEMORY_PER_CHILD_MB


def _status_mb(pid: int, field: str) -> float | None:
    """A kB figure of /proc/<pid>/status in MB (VmRSS: resident now, VmHWM: peak); None once it exits."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    found = [line for line in lines if line.startswith(field)]
    return int(found[0].split()[1]) / 1024 if found else None  # none: exiting


def _rss_mb(pid: int) -> float | None:
    return _status_mb(pid, "VmRSS:")


def _group(pgid: int) -> dict[int, int]:
    """pid -> parent pid of every process in the worker's process group."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            out[int(entry)] = int(fields[1])
    return out


def _pool_process(pgid: int) -> tuple[int, float]:
    """(pid, RSS in MB) of the worker's one pool process: between jobs, the one live member of the group with a
    parent in the group and no children (./worker's main Celery process is its parent)."""
    def pool() -> list[tuple[int, float]]:
        group = _group(pgid)
        parents = set(group.values())
        leaves = [p for p, parent in group.items() if parent in group and p not in parents]
        return [(p, rss) for p in leaves if (rss := _rss_mb(p)) is not None]

    found: list[tuple[int, float]] = []
    wait_for(lambda: _one(pool, found), 20,
             what="one pool process (a replaced one is being started)")
    return found[0]


def _one(pool, found: list) -> bool:
    found[:] = pool()
    return len(found) == 1


def _ready_for_the_next_job(pgid: int, limit_mb: float) -> tuple[int, float]:
    """The pool process the next job would run in, once it holds no more than the limit (the old code: never)."""
    last: list[tuple[int, float]] = []

    def small() -> bool:
        last[:] = [_pool_process(pgid)]
        return last[0][1] <= limit_mb

    try:
        wait_for(small, 15, interval=0.5, what=f"the pool process at <= {limit_mb} MB")
    except AssertionError:
        raise AssertionError(f"the pool process still holds {last[0][1]:.1f} MB after a job") from None
    return last[0]


def _make_table(url: str) -> None:
    run_sql(url, """
        CREATE TABLE t (id int PRIMARY KEY, a text, b numeric, c timestamptz, d jsonb);
        INSERT INTO t SELECT i, md5(i::text) || repeat('x', i % 50), i * 1.5, now() - i * interval '1 min',
                             jsonb_build_object('k', i, 'v', md5(i::text)) FROM generate_series(1, 600000) i;
    """)


def _after_each_job(celery_env, tmp_path, limit_mb: float, env: dict[str, str]) -> list[tuple[int, float]]:
    """(pid, MB) of the pool process each next job would run in: at start, then after a backup, a diff, a restore
    and another backup, each waited for to hold no more than `limit_mb` (a replaced one is being started)."""
    _make_table(celery_env.db_url)
    worker = Worker({**celery_env.env, **env}, tmp_path / "worker.log", concurrency=1).wait_ready()
    pgid = worker.proc.pid
    try:
        seen = [_pool_process(pgid)]
        created = backupctl(celery_env, "create")
        assert created.returncode == 0, created.stderr
        name = next(Path(celery_env.env["BACKUP_DIR"]).glob("*.gz")).name
        seen.append(_ready_for_the_next_job(pgid, limit_mb))
        run_sql(celery_env.db_url, "UPDATE t SET a = 'changed' WHERE id % 100 = 0")
        for args in (["diff", name], ["restore", name, "--yes"], ["create"]):
            done = backupctl(celery_env, *args)
            assert done.returncode == 0, done.stderr
            seen.append(_ready_for_the_next_job(pgid, limit_mb))
    finally:
        worker.stop()
    return seen


def test_the_next_job_starts_in_a_pool_process_holding_no_more_than_the_limit(celery_env, tmp_path):
    """Shipped defaults: whether or not a job left its process above the limit, the next starts at or below it."""
    _after_each_job(celery_env, tmp_path, LIMIT_MB, {})


def test_a_pool_process_holding_more_than_the_limit_is_replaced(celery_env, tmp_path):
    """A limit below what a backup leaves held (~74 MB here) but above a fresh process (~62 MB): replaced."""
    seen = _after_each_job(celery_env, tmp_path, 70, {"CELERY_WORKER_MAX_MEMORY_PER_CHILD_MB": "70"})
    assert len({pid for pid, _ in seen}) > 1, f"no pool process was ever replaced: {seen}"


def _settled(pgid: int) -> tuple[int, float]:
    """(pid, MB) of the pool process once its RSS stops moving: the job's result reaches the client before the
    task returns its freed memory (JobTask.after_return)."""
    last: list[tuple[int, float]] = [(0, -1.0)]

    def still() -> bool:
        now = _pool_process(pgid)
        before, last[0] = last[0], now
        return now[0] == before[0] and abs(now[1] - before[1]) < 0.2

    wait_for(still, 15, interval=0.5, what="the pool process's RSS to settle")
    return last[0]


def test_backups_in_a_row_run_in_the_same_pool_process(celery_env, tmp_path):
    """A backup takes its process's peak above the limit but leaves it holding less: the next backup runs in the
    same process. Celery's own check, of the peak, replaced the process after every backup (at the shipped
    80 MB that showed it, with this table: peak ~80 MB, held after ~74). The limit is set between the peak and
    what is held, as measured here first with no limit, so the test shows the difference on any machine."""
    _make_table(celery_env.db_url)
    probe = Worker({**celery_env.env, "CELERY_WORKER_MAX_MEMORY_PER_CHILD_MB": "0"}, tmp_path / "probe.log",
                   concurrency=1).wait_ready()
    try:
        created = backupctl(celery_env, "create")
        assert created.returncode == 0, created.stderr
        pid, held = _settled(probe.proc.pid)
        peak = _status_mb(pid, "VmHWM:") or 0
    finally:
        probe.stop()
    assert peak - held >= 3, f"a backup of this table peaks at {peak:.1f} MB and holds {held:.1f} after"
    limit_mb = round((peak + held) / 2)
    worker = Worker({**celery_env.env, "CELERY_WORKER_MAX_MEMORY_PER_CHILD_MB": str(limit_mb)},
                    tmp_path / "worker.log", concurrency=1).wait_ready()
    pgid = worker.proc.pid
    try:
        seen = [_pool_process(pgid)]
        for _ in range(3):
            created = backupctl(celery_env, "create")
            assert created.returncode == 0, created.stderr
            seen.append(_ready_for_the_next_job(pgid, limit_mb))
    finally:
        worker.stop()
    assert len({pid for pid, _ in seen}) == 1, f"replaced after a backup at a {limit_mb} MB limit: {seen}"
