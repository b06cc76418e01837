"""The per-database job lock across the two paths (issue 13.3) and on a saturated machine (issue 13.2).

The queued path (a worker) and `--local` take the same PostgreSQL advisory lock, so neither can run a restore
beside the other, and --local locks without Redis. A --local restore whose process has a CPU-bound thread
taking the GIL the whole time keeps its lock for as long as it runs (nothing has to be renewed): queued
restores started meanwhile are all refused with exit 8, and a sampler of pg_locks never sees two holders.
The figures (refused attempts, the restore's duration) are printed (`pytest -s`) and written to
$BT_CRASH_FIGURES when set."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import psycopg2
import pytest

from backup_tasks.cli.dispatch import enqueue, follow, outcome
from backup_tasks.pg import joblock
from tests.celery_worker import *  # noqa: F403
from tests.celery_worker import ROOT, backupctl, free_port, wait_for
from tests.conftest import query, run_sql
from tests.oracle import assert_same, snapshot

pytestmark = pytest.mark.celery

# `backupctl ARGS` in a process that also runs a pure-Python busy loop in a thread: the GIL is contended for
# the whole run (the old Redis lock's renewal thread had to win it in time; nothing needs to now).
BUSY_BACKUPCTL = r"""
import sys, threading

def burn():
    n = 0
    while True:
        n += 1

threading.Thread(target=burn, daemon=True).start()
sys.argv[0] = "backupctl"
from backup_tasks.cli import main
main()
"""


def small_table(url: str) -> None:
    run_sql(url, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100);")


def saved_name(stdout: str) -> str:
    line = next(line for line in stdout.splitlines() if line.startswith("Saved to: "))
    return os.path.basename(line.removeprefix("Saved to: "))


def blocker_on(url: str, table: str):
    """A transaction holding ACCESS SHARE on `table`: a restore's TRUNCATE waits for it (BACKUP_LOCK_TIMEOUT_S)."""
    conn = psycopg2.connect(url)
    conn.cursor().execute(f"SELECT count(*) FROM {table}")
    return conn


def restore_waiting(url: str) -> bool:
    return query(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                      "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")[0][0] > 0


def test_a_local_restore_is_refused_while_a_queued_one_holds_the_lock_and_vice_versa(celery_env, worker,
                                                                                      client_app):
    small_table(celery_env.db_url)
    name = saved_name(backupctl(celery_env, "create").stdout)

    blocker = blocker_on(celery_env.db_url, "t")
    try:
        first = enqueue(client_app, "restore", {"file": name, "show_diff": False})
        wait_for(lambda: restore_waiting(celery_env.db_url), 20, what="the queued restore to wait on the table")
        local = backupctl(celery_env, "restore", name, "--yes", "--local")
        assert local.returncode == 8, local.stderr
        assert f"is being restored by job {first} (restore); not starting restore" in local.stderr
        local_backup = backupctl(celery_env, "create", "--local")
        assert local_backup.returncode == 8 and "not starting create" in local_backup.stderr
    finally:
        blocker.close()
    assert outcome(follow(client_app, first, timeout_s=60), first)["success"]

    blocker = blocker_on(celery_env.db_url, "t")
    try:
        local_proc = subprocess.Popen([sys.executable, "-m", "backup_tasks", "restore", name, "--yes", "--local"],
                                      cwd=ROOT, env=celery_env.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
        owner = f"local:{local_proc.pid}@{socket.gethostname()}"
        wait_for(lambda: [h.owner for h in joblock.holders(celery_env.db_url)] == [owner], 20,
                 what="the --local restore to hold the lock")
        queued = backupctl(celery_env, "restore", name, "--yes")
        assert queued.returncode == 8, queued.stderr
        assert f"is being restored by a --local restore (pid {local_proc.pid} on " in queued.stderr
        assert backupctl(celery_env, "create").returncode == 8
    finally:
        blocker.close()
    out, err = local_proc.communicate(timeout=60)
    assert local_proc.returncode == 0, err
    assert "Restore completed: 1 tables, 100 rows" in out


def test_local_takes_the_lock_without_redis(celery_env):
    small_table(celery_env.db_url)
    dead = f"redis://127.0.0.1:{free_port()}/0"
    env = {**celery_env.env, "CELERY_BROKER_URL": dead, "CELERY_RESULT_BACKEND": dead}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "backup_tasks", *args], cwd=ROOT, env=env, check=False,
                              capture_output=True, text=True, timeout=60)

    created = run("create", "--local")
    assert created.returncode == 0, created.stderr
    name = saved_name(created.stdout)
    with joblock.job_lock(celery_env.db_url, joblock.EXCLUSIVE, "restore", "queued-task-1"):
        refused = run("restore", name, "--yes", "--local")
        assert refused.returncode == 8, refused.stderr
        assert "is being restored by job queued-task-1 (restore)" in refused.stderr
    assert run("restore", name, "--yes", "--local").returncode == 0


class LockSampler(threading.Thread):
    """Reads pg_locks every 20 ms: who held the job lock when."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.samples, self.stop = url, [], threading.Event()

    def run(self) -> None:
        conn = psycopg2.connect(self.url)
        conn.autocommit = True
        with conn.cursor() as cur:
            while not self.stop.wait(0.02):
                self.samples.append((time.monotonic(), joblock.read_holders(cur)))
        conn.close()


def test_no_restore_overlaps_a_running_one_on_a_saturated_machine(celery_env, worker, client_app):
    rows = 500_000
    run_sql(celery_env.db_url, f"""
        CREATE TABLE events (id bigserial PRIMARY KEY, kind text NOT NULL, payload text, amount numeric(12, 2));
        INSERT INTO events (kind, payload, amount)
        SELECT 'k' || (i % 17), repeat(md5(i::text), 3), i / 7.0 FROM generate_series(1, {rows}) i;
    """)
    task_id = enqueue(client_app, "create", {})
    name = outcome(follow(client_app, task_id, timeout_s=120), task_id)["name"]
    backed_up = snapshot(celery_env.db_url)
    run_sql(celery_env.db_url, "DELETE FROM events WHERE id % 7 = 0;")

    sampler = LockSampler(celery_env.db_url)
    sampler.start()
    started = time.monotonic()
    local = subprocess.Popen([sys.executable, "-c", BUSY_BACKUPCTL, "restore", name, "--yes", "--local"],
                             cwd=ROOT, env=celery_env.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    owner = f"local:{local.pid}@{socket.gethostname()}"
    wait_for(lambda: any(h.owner == owner for _, hs in sampler.samples for h in hs), 30, interval=0.02,
             what="the --local restore to hold the lock")
    attempts: list[tuple[int, str]] = []
    while local.poll() is None:
        queued = backupctl(celery_env, "restore", name, "--yes")
        attempts.append((queued.returncode, queued.stderr))
    duration = time.monotonic() - started
    out, err = local.communicate(timeout=10)
    sampler.stop.set()
    sampler.join(timeout=10)

    assert local.returncode == 0, err
    assert f"Restore completed: 1 tables, {rows} rows" in out
    assert_same(backed_up, snapshot(celery_env.db_url))
    # Every attempt but the last ran while the --local restore held the lock; the last may have started as it
    # finished. Each refused one named the holder.
    assert len(attempts) >= 3, attempts
    for code, stderr in attempts[:-1]:
        assert code == 8 and f"being restored by a --local restore (pid {local.pid} on " in stderr, stderr
    assert attempts[-1][0] in (0, 8), attempts[-1]
    held = [hs for _, hs in sampler.samples if any(h.owner == owner for h in hs)]
    assert held and all(len(hs) == 1 for hs in held)  # nobody else held it, in any mode, while it ran
    assert all(len(hs) <= 1 or all(h.mode == joblock.SHARED for h in hs) for _, hs in sampler.samples)
    refused = sum(code == 8 for code, _ in attempts)
    _report({"restore rows": rows, "--local restore with a busy thread s": round(duration, 1),
             "queued attempts": len(attempts), "refused with exit 8": refused,
             "pg_locks samples while held": len(held)})


def _report(figures: dict) -> None:
    print(f"\nsaturated machine: {figures}")
    path = os.environ.get("BT_CRASH_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"test": "saturated machine", **figures}) + "\n")
