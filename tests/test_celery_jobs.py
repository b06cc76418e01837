"""Jobs through a real worker on the real Redis: the CLI enqueues and waits (no --local), results and errors
come back as they would in-process, progress reaches the client, locks refuse conflicting jobs."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import psycopg2
import pytest

from backup_tasks.cli.dispatch import enqueue, follow, outcome
from backup_tasks.errors import BusyError, NotFoundError, UsageError
from backup_tasks.pg import joblock
from tests.celery_worker import *  # noqa: F403
from tests.celery_worker import BACKUPCTL, ROOT, Worker, backupctl, wait_for
from tests.conftest import query, run_sql
from tests.oracle import assert_same, snapshot
from tests.terminal import on_terminal

pytestmark = pytest.mark.celery

TORTURE = Path(__file__).with_name("torture_schema.sql")
CHANGES = """
DELETE FROM all_types WHERE id % 3 = 0;
UPDATE all_types SET tx = 'changed', j = '{}', f8 = 1 WHERE id % 3 = 1;
INSERT INTO all_types (label, num) VALUES ('new row', 1);
DELETE FROM a.b;
INSERT INTO zero DEFAULT VALUES;
"""


def big_table(url: str, rows: int = 300_000) -> None:
    run_sql(url, f"""
        CREATE TABLE events (id bigserial PRIMARY KEY, kind text NOT NULL, payload text, amount numeric(12, 2),
                             at timestamptz DEFAULT now());
        INSERT INTO events (kind, payload, amount)
        SELECT 'k' || (i % 17), repeat(md5(i::text), 3), i / 7.0 FROM generate_series(1, {rows}) i;
    """)


def saved_name(stdout: str) -> str:
    line = next(line for line in stdout.splitlines() if line.startswith("Saved to: "))
    return Path(line.removeprefix("Saved to: ")).name


def test_create_then_restore_through_the_cli_on_a_worker_round_trip(celery_env, worker):
    run_sql(celery_env.db_url, """
        CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL, note text, born date, score numeric(8, 3));
        CREATE TABLE orders (id bigserial PRIMARY KEY, user_id int REFERENCES users, total numeric, tags text[]);
        INSERT INTO users (name, note, born, score)
        SELECT 'u' || i, CASE WHEN i % 2 = 0 THEN '' END, date '2000-01-01' + i, i / 3.0
        FROM generate_series(1, 500) i;
        INSERT INTO orders (user_id, total, tags) SELECT 1 + i % 500, i * 1.25, ARRAY['a', 'b"c']
        FROM generate_series(1, 2000) i;
    """)
    before = snapshot(celery_env.db_url)

    created = backupctl(celery_env, "create")
    assert created.returncode == 0, created.stderr
    name = saved_name(created.stdout)
    assert (celery_env.backup_dir / name).is_file()
    assert "- public.users: 500 rows" in created.stdout or "- users: 500 rows" in created.stdout, created.stdout

    run_sql(celery_env.db_url, "DELETE FROM orders WHERE id % 2 = 0; UPDATE users SET name = 'x' WHERE id < 50; "
                               "INSERT INTO users (name) VALUES ('new');")
    assert snapshot(celery_env.db_url) != before

    # A path to the file is sent as its name: the worker reads it from its own BACKUP_DIR.
    restored = backupctl(celery_env, "restore", str(celery_env.backup_dir / name), "--yes")
    assert restored.returncode == 0, restored.stderr
    assert "Calculating diff before restore..." in restored.stdout
    assert "  public.orders: 1000 → 2000 (+1000)\n" in restored.stdout or "  orders: 1000 → 2000 (+1000)\n" \
        in restored.stdout, restored.stdout  # the seed's counts diff, from the restore job's result.diff
    assert "Committing transaction..." in restored.stdout and "Restore completed" in restored.stdout
    assert_same(before, snapshot(celery_env.db_url))
    log = worker.output()
    # Issue 14.1: with --yes nobody reads a detailed diff, so one job runs (it was a diff job, then a restore job).
    assert "Task backup_tasks.restore[" in log and "Task backup_tasks.diff[" not in log


def test_the_torture_schema_round_trips_through_the_worker(celery_env, worker, client_app):
    """`backupctl create` on the worker, then the restore job `backupctl restore --yes` enqueues after its
    diff (that diff is the core's, tested with the core)."""
    if not TORTURE.is_file():
        pytest.skip("tests/torture_schema.sql is not there")
    run_sql(celery_env.db_url, TORTURE.read_text(encoding="utf-8"))
    before = snapshot(celery_env.db_url)
    created = backupctl(celery_env, "create")
    assert created.returncode == 0, created.stderr
    name = saved_name(created.stdout)

    run_sql(celery_env.db_url, CHANGES)
    assert snapshot(celery_env.db_url) != before
    task_id = enqueue(client_app, "restore", {"file": name, "show_diff": False})
    result = outcome(follow(client_app, task_id, timeout_s=60), task_id)
    assert result["job"] == "restore" and result["success"]
    assert_same(before, snapshot(celery_env.db_url))


def test_the_client_sees_progress_states_and_the_job_name_in_every_result(celery_env, worker, client_app):
    big_table(celery_env.db_url)
    created_states: list[str] = []
    events = []
    task_id = enqueue(client_app, "create", {})
    meta = follow(client_app, task_id, events.append, on_state=lambda m: created_states.append(m["status"]))
    result = outcome(meta, task_id)
    assert result["job"] == "create" and result["total_rows"] == 300_000
    assert "STARTED" in created_states and "PROGRESS" in created_states
    assert events and all(e.phase == "backup" for e in events)
    assert [e.rows_done for e in events] == sorted(e.rows_done for e in events)

    events.clear()
    task_id = enqueue(client_app, "restore", {"file": result["name"], "show_diff": False})
    result = outcome(follow(client_app, task_id, events.append), task_id)
    assert result["job"] == "restore" and result["restored_rows"] == 300_000
    restore_events = [e for e in events if e.phase == "restore" and e.message is None]  # the rows
    assert restore_events, events
    assert any(e.bytes_total for e in restore_events)
    assert restore_events[-1].bytes_done >= restore_events[0].bytes_done
    # After the rows the engine names its phases (issue 14.4); the bar shows them (cli/progressbar.py).
    assert "committing" in [e.message for e in events], events
    assert "progress update" not in worker.output()  # every state write and task-progress event went out


def test_no_wait_prints_the_id_then_status_and_wait_follow_the_job(celery_env, worker):
    run_sql(celery_env.db_url, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10);")
    started = backupctl(celery_env, "create", "--no-wait")
    assert started.returncode == 0, started.stderr
    task_id = started.stdout.strip().splitlines()[-1]
    assert len(task_id) == 36 and f"backupctl wait {task_id}" in started.stderr

    waited = backupctl(celery_env, "wait", task_id)
    assert waited.returncode == 0, waited.stderr
    assert "- t: 10 rows" in waited.stdout and "Saved to: " in waited.stdout  # rendered as `create` would

    status = backupctl(celery_env, "status", task_id)
    assert status.returncode == 0
    assert f"Job {task_id}: SUCCESS" in status.stdout and "job: create" in status.stdout

    unknown = backupctl(celery_env, "status", "00000000-0000-0000-0000-000000000000")
    assert "PENDING" in unknown.stdout


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append((self.headers["Content-Type"], json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_failed_job_keeps_its_error_class_and_exit_code_and_posts_the_webhook(celery_env, tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received = []
    env = {**celery_env.env, "BACKUP_NOTIFY_WEBHOOK_URL": f"http://127.0.0.1:{server.server_port}/hook?token=s3cret"}
    w = Worker(env, tmp_path / "worker.log").wait_ready()
    try:
        missing = "backup_20200101_000000.backup.gz"
        result = backupctl(celery_env, "verify", missing)
        assert result.returncode == int(NotFoundError.exit_code), result.stderr
        assert f"Error: no backup named {missing}" in result.stderr
        assert "Hint: See `backupctl list`" in result.stderr
        wait_for(lambda: _Hook.received, 10, what="the webhook POST")
        content_type, body = _Hook.received[0]
        assert content_type == "application/json"
        assert body["job"] == "verify" and body["status"] == "failed" and body["file"] == missing
        assert body["database"] == celery_env.db_name and "no backup named" in body["error"]
        assert "s3cret" not in json.dumps(body) and "postgresql://" not in json.dumps(body)
        assert "ERROR/ForkPoolWorker" in w.output() and "job verify failed" in w.output()
    finally:
        w.stop()
        server.shutdown()


def test_a_worker_refuses_paths_outside_its_backup_dir(celery_env, worker, client_app):
    outside = celery_env.backup_dir.parent / "backup_20200101_000000.backup.gz"
    outside.write_bytes(b"not read")
    task_id = enqueue(client_app, "verify", {"file": str(outside)})  # a client that skipped remote_kwargs
    with pytest.raises(UsageError) as info:
        outcome(follow(client_app, task_id), task_id)
    assert "jobs on a worker only read backups in BACKUP_DIR by name" in info.value.message


def blocker_on(url: str, table: str):
    """A transaction holding ACCESS SHARE on `table`: a restore's TRUNCATE waits for it (BACKUP_LOCK_TIMEOUT_S)."""
    conn = psycopg2.connect(url)
    conn.cursor().execute(f"SELECT count(*) FROM {table}")
    return conn


def restore_waiting(url: str) -> bool:
    """A session of this database waits for a lock (the restore, behind the blocker)."""
    return query(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                      "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")[0][0] > 0


def test_the_lock_refuses_a_second_restore_and_a_backup_while_a_restore_runs(celery_env, worker, client_app):
    run_sql(celery_env.db_url, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100);")
    created = backupctl(celery_env, "create")
    name = saved_name(created.stdout)
    blocker = blocker_on(celery_env.db_url, "t")
    try:
        first = enqueue(client_app, "restore", {"file": name, "show_diff": False})
        wait_for(lambda: restore_waiting(celery_env.db_url), 15, what="the first restore to wait on the table lock")
        assert [h.task_id for h in joblock.holders(celery_env.db_url)] == [first]

        second = backupctl(celery_env, "restore", name, "--yes")
        assert second.returncode == int(BusyError.exit_code) == 8, second.stderr
        assert "is being restored by job " + first in second.stderr
        assert f"backupctl wait {first}" in second.stderr

        backup = backupctl(celery_env, "create")
        assert backup.returncode == 8 and "is being restored" in backup.stderr
    finally:
        blocker.close()
    result = outcome(follow(client_app, first, timeout_s=60), first)
    assert result["job"] == "restore" and result["restored_rows"] == 100
    assert joblock.holders(celery_env.db_url) == []
    assert backupctl(celery_env, "create").returncode == 0


def test_ctrl_c_while_waiting_leaves_the_job_running(celery_env, worker, client_app):
    run_sql(celery_env.db_url, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10);")
    name = saved_name(backupctl(celery_env, "create").stdout)
    blocker = blocker_on(celery_env.db_url, "t")
    try:
        client = subprocess.Popen([BACKUPCTL, "restore", name, "--yes"], cwd=ROOT, env=celery_env.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: restore_waiting(celery_env.db_url), 20, what="the restore to start")
        client.send_signal(signal.SIGINT)
        _, err = client.communicate(timeout=15)
        assert client.returncode == 130, err
        task_id = err.split("Job ", 1)[1].split(" ", 1)[0]
        assert f"Job {task_id} keeps running; follow it with `backupctl wait {task_id}`" in err
    finally:
        blocker.close()
    waited = backupctl(celery_env, "wait", task_id)
    assert waited.returncode == 0, waited.stderr
    assert "Restore completed: 1 tables, 10 rows" in waited.stdout


def _restore_results(celery_env) -> list[dict]:
    """The results of the restore jobs kept in Redis (what `backupctl wait` would render)."""
    r = celery_env.redis()
    metas = [json.loads(r.get(k)) for k in r.scan_iter("celery-task-meta-*")]
    return [m["result"] for m in metas if isinstance(m.get("result"), dict) and m["result"].get("job") == "restore"]


def test_on_a_terminal_restore_shows_the_detailed_diff_asks_for_the_workers_database_then_restores(
        celery_env, worker, make_db):
    """Issues 14.1 and 13.4: a person reads the detailed diff; the question names the database the worker
    restores into, and a note says the shell's own DATABASE_URL (another database) is not used."""
    run_sql(celery_env.db_url, "CREATE TABLE t (id int PRIMARY KEY, v text);"
                               "INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 300) i;")
    name = saved_name(backupctl(celery_env, "create").stdout)
    backed_up = snapshot(celery_env.db_url)
    run_sql(celery_env.db_url, "DELETE FROM t WHERE id <= 10; UPDATE t SET v = 'x' WHERE id > 290;")
    other_name, other_url = make_db()
    env = {**celery_env.env, "DATABASE_URL": other_url}

    code, output = on_terminal(["restore", name], env, "y", cwd=str(ROOT))
    assert code == 0, output
    assert (f"Note: this job runs on a worker, on its DATABASE_URL: database {celery_env.db_name} on localhost:5432. "
            f"This shell's DATABASE_URL (database {other_name} on localhost:5432) is not used") in output
    assert output.count("Note: this job runs on a worker") == 1  # once, although two jobs ran
    assert "t: 290 → 300 (+10)  [insert 10, change 10]" in output  # the detailed diff
    assert f"Restore into database {celery_env.db_name} on localhost? This replaces its data." in output
    assert "Restore completed: 1 tables, 300 rows" in output
    log = worker.output()
    assert log.index("Task backup_tasks.diff[") < log.index("Task backup_tasks.restore[")
    assert [r["diff"] for r in _restore_results(celery_env)] == [None]  # the restore job ran with show_diff=False
    assert_same(backed_up, snapshot(celery_env.db_url))
    assert query(other_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


def test_a_shell_database_url_naming_the_workers_database_gets_no_note(celery_env, worker):
    run_sql(celery_env.db_url, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 5);")
    same = f"host=127.0.0.1 port=5432 dbname={celery_env.db_name} user=postgres"  # another spelling, same database
    created = backupctl(celery_env, "create", env={**celery_env.env, "DATABASE_URL": same})
    assert created.returncode == 0, created.stderr
    assert "Note:" not in created.stderr
