"""Workers killed with SIGKILL: a restore cut off mid-COPY changes nothing and is not run again, its lock
lapses after JOB_LOCK_TTL_S so the next restore runs, a waiting client is told the job was lost; a backup whose
pool process dies is delivered again (late acknowledgement) and completes."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from backup_tasks import locks
from backup_tasks.cli.dispatch import enqueue, follow, outcome
from backup_tasks.errors import QueueError
from tests.celery_worker import *  # noqa: F401,F403
from tests.celery_worker import Worker, backupctl, wait_for
from tests.conftest import query, run_sql
from tests.oracle import assert_same, snapshot

pytestmark = pytest.mark.celery

ROWS = 300_000


def big_table(url: str) -> None:
    run_sql(url, f"""
        CREATE TABLE events (id bigserial PRIMARY KEY, kind text NOT NULL, payload text, amount numeric(12, 2));
        INSERT INTO events (kind, payload, amount)
        SELECT 'k' || (i % 17), md5(i::text), i / 7.0 FROM generate_series(1, {ROWS}) i;
    """)


def meta_of(app, task_id: str) -> dict:
    return app.backend.get_task_meta(task_id)


def in_phase(app, task_id: str, phase: str):
    meta = meta_of(app, task_id)
    result = meta.get("result")
    if meta["status"] == "PROGRESS" and result.get("phase") == phase and result.get("rows_done", 0) > 0:
        return result
    assert meta["status"] not in ("SUCCESS", "FAILURE"), f"the job finished before it could be killed: {meta}"
    return None


def sessions(url: str) -> int:
    return query(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                      "AND application_name = 'backup_tasks'")[0][0]


def test_sigkill_mid_restore_changes_nothing_and_frees_the_lock_after_its_ttl(celery_env, client_app, tmp_path):
    big_table(celery_env.db_url)
    victim = Worker(celery_env.env, tmp_path / "victim.log").wait_ready()
    try:
        task_id = enqueue(client_app, "create", {})
        name = outcome(follow(client_app, task_id, timeout_s=60), task_id)["name"]
        run_sql(celery_env.db_url, "DELETE FROM events WHERE id % 10 = 0; UPDATE events SET kind = 'changed' "
                                   "WHERE id < 1000; SELECT setval('events_id_seq', 5000000);")
        before = snapshot(celery_env.db_url)

        restore_id = enqueue(client_app, "restore", {"file": name, "show_diff": False})
        progress = wait_for(lambda: in_phase(client_app, restore_id, "restore"), 30, interval=0.02,
                            what="the restore to be copying rows")
        assert progress["rows_done"] < ROWS
        victim.kill()
    finally:
        victim.stop()

    db = locks.database_key(celery_env.db_url)
    assert locks.holders(db)["exclusive"][0]["task_id"] == restore_id  # nobody released it: the TTL will

    # A client waiting on the job learns that it was lost (its liveness key lapsed), instead of hanging.
    lost: list[BaseException] = []
    waiter = threading.Thread(target=lambda: _follow_into(client_app, restore_id, lost))
    waiter.start()

    # PostgreSQL rolled the cut-off transaction back: the data is as before the restore, sequences too.
    wait_for(lambda: sessions(celery_env.db_url) == 0, 15, what="the killed restore's session to end")
    assert_same(before, snapshot(celery_env.db_url))

    started = time.monotonic()
    wait_for(lambda: not locks.holders(db)["exclusive"], 10, what="the lock to lapse")
    assert time.monotonic() - started <= 3 + 1  # JOB_LOCK_TTL_S=3, no renewal since the kill

    waiter.join(timeout=20)
    assert lost and isinstance(lost[0], QueueError) and "was lost" in lost[0].message, lost

    survivor = Worker(celery_env.env, tmp_path / "survivor.log").wait_ready()
    try:
        restored = backupctl(celery_env, "restore", name, "--yes")
        assert restored.returncode == 0, restored.stderr
        assert restore_id not in survivor.output()  # acknowledged on start: never delivered a second time
    finally:
        survivor.stop()
    after = snapshot(celery_env.db_url)
    assert after["tables"]["public.events"][0] == ROWS and after != before


def _follow_into(app, task_id: str, out: list) -> None:
    try:
        follow(app, task_id, timeout_s=30)
    except BaseException as exc:  # noqa: BLE001
        out.append(exc)


def test_a_backup_whose_pool_process_is_killed_is_delivered_again_and_completes(celery_env, worker, client_app):
    big_table(celery_env.db_url)
    task_id = enqueue(client_app, "create", {})
    progress = wait_for(lambda: in_phase(client_app, task_id, "backup"), 30, interval=0.02,
                        what="the backup to be running")
    os.kill(progress["pid"], signal.SIGKILL)  # the pool process, not the worker: it sees the loss and requeues
    result = outcome(follow(client_app, task_id, timeout_s=60), task_id)
    assert result["job"] == "create" and result["total_rows"] == ROWS
    assert "WorkerLostError" in worker.output() or "signal 9" in worker.output()
    assert [p.name for p in celery_env.backup_dir.glob("*.backup.gz")] == [result["name"]]
