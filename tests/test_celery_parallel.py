"""Issue 15, queued: `backupctl create --jobs N` on real Celery worker processes, the parts shared through Redis.

Each test runs real workers (./worker, prefork) on the real Redis; the backups are checked against the document a
single process writes and restored under the independent oracle.
"""

from __future__ import annotations

import gzip
import os
import re
import signal
import threading
from pathlib import Path

import pytest

from backup_tasks.cli.dispatch import enqueue, follow, outcome
from backup_tasks.core import restore_backup
from backup_tasks.errors import BackupError
from tests.celery_worker import *  # noqa: F403
from tests.celery_worker import Worker, backupctl, wait_for
from tests.conftest import ADMIN_URL, query, run_sql
from tests.oracle import assert_same, snapshot
from tests.test_consistency import DATA, SCHEMA, Writer, _invariants

pytestmark = pytest.mark.celery

SPLIT = {"BACKUP_SPLIT_MIN_BYTES": str(1 << 20)}  # tables over 1 MiB split into ranges: several parts here


def document(path: Path) -> bytes:
    return re.sub(rb'"timestamp":"[^"]*"', b'"timestamp":""', gzip.decompress(path.read_bytes()), count=1)


def saved(celery_env, stdout: str) -> Path:
    line = next(line for line in stdout.splitlines() if line.startswith("Saved to: "))
    return celery_env.backup_dir / Path(line.removeprefix("Saved to: ")).name


def shop(url: str) -> None:
    run_sql(url, """
        CREATE TABLE big (id int PRIMARY KEY, v text, n numeric);
        INSERT INTO big SELECT i, md5(i::text), i / 3.0 FROM generate_series(1, 120000) i;
        CREATE TABLE other (id serial PRIMARY KEY, body text);
        INSERT INTO other (body) SELECT repeat(md5(i::text), 30) FROM generate_series(1, 3000) i;
        CREATE TABLE small (id int); INSERT INTO small VALUES (1), (2);
        SELECT lo_from_bytea(0, 'a large object');
        ANALYZE;
    """)


def test_jobs_3_on_two_processes_writes_the_single_process_document(celery_env, tmp_path):
    shop(celery_env.db_url)
    env = {**celery_env.env, **SPLIT}
    worker = Worker(env, tmp_path / "worker.log", concurrency=2).wait_ready()
    try:
        one = backupctl(celery_env, "create")
        assert one.returncode == 0, one.stderr
        three = backupctl(celery_env, "create", "--jobs", "3")
        assert three.returncode == 0, three.stderr
    finally:
        worker.stop()
    single, parallel = saved(celery_env, one.stdout), saved(celery_env, three.stdout)
    assert document(parallel) == document(single)
    assert re.search(r"Written in \d+ parts by 2 processes", three.stdout), three.stdout  # a helper took parts
    assert not list(celery_env.backup_dir.glob(".backup_tasks-part-*"))
    before = snapshot(celery_env.db_url)
    run_sql(celery_env.db_url, "DELETE FROM big WHERE id % 2 = 0")
    restore_backup(parallel, database_url=celery_env.db_url)
    assert_same(before, snapshot(celery_env.db_url))


def test_one_worker_process_completes_jobs_4_alone(celery_env, tmp_path):
    """The coordinator takes the parts itself when no other process is free: never a deadlock."""
    shop(celery_env.db_url)
    env = {**celery_env.env, **SPLIT}
    worker = Worker(env, tmp_path / "worker.log", concurrency=1).wait_ready()
    try:
        result = backupctl(celery_env, "create", "--jobs", "4", timeout=180)
    finally:
        worker.stop()
    assert result.returncode == 0, result.stderr
    assert re.search(r"Written in \d+ parts by 1 process", result.stdout), result.stdout


@pytest.mark.slow
def test_concurrent_writers_with_jobs_3_on_two_processes_see_one_moment(celery_env, make_db, tmp_path):
    url = celery_env.db_url
    run_sql(url, SCHEMA + DATA + "ANALYZE;")
    env = {**celery_env.env, **SPLIT}
    worker = Worker(env, tmp_path / "worker.log", concurrency=2).wait_ready()
    writer = Writer(url)
    writer.start()
    try:
        wait_for(lambda: writer.commits >= 50 or writer.error, 10, what="the writer to get going")
        ledger_at_start = _invariants(url)[2]
        result = backupctl(celery_env, "create", "--jobs", "3", timeout=180)
    finally:
        writer.stop.set()
        writer.join(timeout=30)
        worker.stop()
    assert writer.error is None, writer.error
    assert result.returncode == 0, result.stderr
    _, fresh = make_db()
    run_sql(fresh, SCHEMA)
    restore_backup(saved(celery_env, result.stdout), database_url=fresh)
    total, broken, ledger = _invariants(fresh)
    assert (total, broken) == (2 * 100_000 * 1000, 0)
    assert ledger_at_start <= ledger < _invariants(url)[2]


@pytest.mark.slow
def test_a_part_whose_process_is_killed_is_written_again(celery_env, client_app, tmp_path):
    """SIGKILL of the pool process writing a part: its lease lapses, another process (here the coordinator)
    writes the part again while the snapshot lives, and the backup completes, exactly."""
    url = celery_env.db_url
    run_sql(url, "CREATE TABLE big (id int PRIMARY KEY, v text);"
                 "INSERT INTO big SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, 600000) i; ANALYZE;")
    # No replacement of pool processes after a job (CELERY_WORKER_MAX_MEMORY_PER_CHILD_MB): the helper found
    # below must still exist when it is killed, even if its task has just ended.
    env = {**celery_env.env, "BACKUP_SPLIT_MIN_BYTES": str(16 << 20), "BACKUP_PART_LEASE_S": "3",
           "BACKUP_BATCH_BYTES": str(256 << 10), "CELERY_WORKER_MAX_MEMORY_PER_CHILD_MB": "0"}
    worker = Worker(env, tmp_path / "worker.log", concurrency=2).wait_ready()
    try:
        task_id = enqueue(client_app, "create", {"jobs": 2})

        def helper_writing() -> int | None:
            rows = query(ADMIN_URL, "SELECT pid FROM pg_stat_activity WHERE application_name = 'backup_tasks_part' "
                                    "AND datname = %s AND query LIKE 'FETCH%%'", (celery_env.db_name,))
            return len(rows) >= 2 or None  # both processes are writing parts: one of them is the helper

        wait_for(helper_writing, 60, interval=0.01, what="two processes writing parts")
        helper = _pool_process_running(worker, "backup_tasks.backup_parts")
        os.kill(helper, signal.SIGKILL)
        result = outcome(follow(client_app, task_id, timeout_s=240), task_id)
    finally:
        worker.stop()
    before = snapshot(url)
    run_sql(url, "DELETE FROM big WHERE id < 1000")
    restore_backup(celery_env.backup_dir / result["name"], database_url=url)
    assert_same(before, snapshot(url))
    assert not list(celery_env.backup_dir.glob(".backup_tasks-part-*"))


def _pool_process_running(worker: Worker, task: str) -> int:
    """The pid of the pool process that runs `task` (Celery's inspect: each active task with its worker_pid)."""
    from backup_tasks.celery_app import make_app

    app = make_app()
    try:
        def find():
            for tasks in (app.control.inspect(timeout=1.0).active() or {}).values():
                for t in tasks:
                    if t["name"] == task:
                        return t["worker_pid"]
            return None
        return wait_for(find, 30, interval=0.2, what=f"a running {task}")
    finally:
        app.close()


def test_the_snapshot_holder_terminated_fails_the_job_and_leaves_nothing(celery_env, client_app, tmp_path):
    url = celery_env.db_url
    run_sql(url, "CREATE TABLE big (id int PRIMARY KEY, v text);"
                 "INSERT INTO big SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, 400000) i; ANALYZE;")
    env = {**celery_env.env, "BACKUP_SPLIT_MIN_BYTES": str(8 << 20), "BACKUP_BATCH_BYTES": str(128 << 10)}
    worker = Worker(env, tmp_path / "worker.log", concurrency=2).wait_ready()
    try:
        task_id = enqueue(client_app, "create", {"jobs": 2})

        def holder() -> int | None:
            rows = query(ADMIN_URL, "SELECT pid FROM pg_stat_activity WHERE application_name = 'backup_tasks' "
                                    "AND state = 'idle in transaction' AND datname = %s", (celery_env.db_name,))
            parts = query(ADMIN_URL, "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                     "'backup_tasks_part' AND datname = %s", (celery_env.db_name,))[0][0]
            return rows[0][0] if rows and parts else None

        pid = wait_for(holder, 60, interval=0.005, what="parts reading beside the snapshot holder")
        query(ADMIN_URL, "SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(BackupError) as info:
            outcome(follow(client_app, task_id, timeout_s=120), task_id)
    finally:
        worker.stop()
    assert "snapshot" in info.value.message or "terminat" in info.value.message, info.value.message
    assert sorted(p.name for p in celery_env.backup_dir.iterdir()) == []


def test_part_tasks_are_visible_in_flower_events(celery_env, client_app, tmp_path):
    """Each helper is a task of its own (backup_tasks.backup_parts) with task-progress events, as Flower shows."""
    shop(celery_env.db_url)
    env = {**celery_env.env, **SPLIT}
    worker = Worker(env, tmp_path / "worker.log", concurrency=2).wait_ready()
    events = []
    ready = threading.Event()

    def listen() -> None:
        with client_app.connection() as conn:
            receiver = client_app.events.Receiver(conn, handlers={"*": events.append})
            ready.set()
            try:
                receiver.capture(limit=None, timeout=30, wakeup=True)
            except Exception:  # noqa: BLE001 - the timeout ends the capture
                pass

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        task_id = enqueue(client_app, "create", {"jobs": 2})
        outcome(follow(client_app, task_id, timeout_s=120), task_id)
        wait_for(lambda: any(e.get("type") == "task-succeeded" and e.get("uuid") != task_id for e in events), 20,
                 what="the helper task's events")
    finally:
        worker.stop()
    names = {e.get("name") for e in events if e.get("type") == "task-received"}
    assert "backup_tasks.backup_parts" in names
    assert any(e.get("type") == "task-progress" and e.get("uuid") != task_id for e in events)


def test_a_queued_backup_gives_way_to_a_migration_and_retries(celery_env, tmp_path):
    """What a user meets: `backupctl create --jobs 2` while a deploy's migration runs `ALTER TABLE` on a table the
    backup has locked but not read yet. Before, the part that reached the table waited for the ALTER, the ALTER for
    the backup, the backup for its part: nothing ended it, and the application's queries on the table queued behind
    the ALTER. Now the part fails at once (NOWAIT), the attempt gives way with nothing kept, the migration runs, and
    the task's retry (the error is transient) writes the backup, with the migration's new column."""
    url = celery_env.db_url
    database = url.rsplit("/", 1)[1]
    run_sql(url, """
        CREATE TABLE aaa_events (id int PRIMARY KEY, v text);
        INSERT INTO aaa_events SELECT i, md5(i::text) || md5((-i)::text) FROM generate_series(1, 300000) i;
        CREATE TABLE zz_orders (id int PRIMARY KEY, total numeric);
        INSERT INTO zz_orders SELECT i, i * 1.5 FROM generate_series(1, 1000) i;
        ANALYZE;
    """)  # aaa_events is read first, in ~60 page ranges: zz_orders' part starts well after the ALTER queues
    migrated: list[float] = []

    def migrate() -> None:
        held = ("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE a.application_name = 'backup_tasks' AND a.datname = %s AND l.granted "
                "AND l.mode = 'AccessShareLock' AND l.relation = 'public.zz_orders'::regclass")
        wait_for(lambda: query(url, held, (database,))[0][0], 60, interval=0.005, what="the backup's locks")
        run_sql(url, "ALTER TABLE zz_orders ADD COLUMN note text")  # queues behind the backup's lock
        migrated.append(1)

    env = {**celery_env.env, **SPLIT}
    worker = Worker(env, tmp_path / "worker.log", concurrency=2).wait_ready()
    thread = threading.Thread(target=migrate, daemon=True)
    try:
        thread.start()
        result = backupctl(celery_env, "create", "--jobs", "2", timeout=180)
        thread.join(30)
    finally:
        worker.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert migrated, "the migration never ran"
    log = (tmp_path / "worker.log").read_text()
    gave_way = r'hit a transient error \(.*could not obtain lock on relation "public\.zz_orders"'
    assert re.search(gave_way, log), log[-3000:]
    path = saved(celery_env, result.stdout)
    document_ = gzip.decompress(path.read_bytes())
    assert b'"columns":["id","total","note"]' in document_.replace(b" ", b""), document_[:600]
    assert len(list(celery_env.backup_dir.glob("backup_*.backup.gz"))) == 1  # the attempt that gave way kept nothing
