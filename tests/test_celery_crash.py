"""Workers killed with SIGKILL: the job lock (held by PostgreSQL, pg/joblock.py) is free the moment the worker
dies, so the next restore runs at once; a restore cut off mid-COPY changes nothing and is not run again; a
waiting client is told the job was lost within ~30 s; a backup whose pool process dies is delivered again (late
acknowledgement) and completes.

The figures of the first test (kill -> lock free, kill -> next restore done, kill -> client told) are printed
(`pytest -s`) and written to $BT_CRASH_FIGURES when set."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import psycopg2
import pytest

from backup_tasks.cli.dispatch import enqueue, follow, outcome
from backup_tasks.errors import QueueError
from backup_tasks.pg import joblock
from tests.celery_worker import *  # noqa: F403
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


def waiting_on_a_lock(url: str) -> list[str]:
    """Queries of this database's sessions that wait for a table lock."""
    return [q for (q,) in query(url, "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
                                     "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")]


def test_sigkill_in_the_diff_phase_of_a_queued_restore_frees_the_lock_at_once(celery_env, client_app, tmp_path):
    """Issue 13.2: the next `backupctl restore` runs right after the crash, not JOB_LOCK_TTL_S (600 s) later."""
    big_table(celery_env.db_url)
    survivor = Worker(celery_env.env, tmp_path / "survivor.log").wait_ready()  # the default queue
    victim = Worker(celery_env.env, tmp_path / "victim.log", queues="victim").wait_ready()
    try:
        task_id = enqueue(client_app, "create", {})
        name = outcome(follow(client_app, task_id, timeout_s=60), task_id)["name"]
        backed_up = snapshot(celery_env.db_url)
        run_sql(celery_env.db_url, "DELETE FROM events WHERE id % 10 = 0;")

        # The restore's diff phase (counting the rows, show_diff) waits behind a lock held here, so the kill
        # lands in it whatever the engine's speed.
        blocker = psycopg2.connect(celery_env.db_url)
        blocker.cursor().execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        restore_id = client_app.signature("backup_tasks.restore", kwargs={"file": name, "show_diff": True}
                                          ).apply_async(queue="victim").id
        waiting = wait_for(lambda: waiting_on_a_lock(celery_env.db_url), 30, what="the restore's diff to wait")
        assert [(h.job, h.task_id, h.mode) for h in joblock.holders(celery_env.db_url)] == \
            [("restore", restore_id, joblock.EXCLUSIVE)]
        lost: list[BaseException] = []
        waiter = threading.Thread(target=_follow_into, args=(client_app, restore_id, lost, 60))
        waiter.start()
        victim.kill()
        killed = time.monotonic()
        blocker.close()

        wait_for(lambda: not joblock.holders(celery_env.db_url), 10, interval=0.02, what="the lock to be free")
        lock_free_s = time.monotonic() - killed
        restored = backupctl(celery_env, "restore", name, "--yes")
        next_done_s = time.monotonic() - killed
        assert restored.returncode == 0, restored.stderr  # the first attempt after the kill: not refused
        waiter.join(timeout=60)
        assert lost and isinstance(lost[0], QueueError) and "was lost" in lost[0].message, lost
        lost_s = lost[1] - killed
    finally:
        victim.stop()
        survivor.stop()
    assert_same(backed_up, snapshot(celery_env.db_url))
    assert restore_id not in survivor.output()  # acknowledged on start: never delivered a second time
    figures = {"waiting query": waiting[0][:80], "kill -> lock free s": round(lock_free_s, 3),
               "kill -> next restore done s": round(next_done_s, 2), "kill -> client told lost s": round(lost_s, 1)}
    _report("sigkill in the diff phase", figures)
    assert lock_free_s < 2 and next_done_s < 30 and lost_s < 30, figures


def test_sigkill_mid_restore_changes_nothing_and_the_next_restore_runs(celery_env, client_app, tmp_path):
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
        killed = time.monotonic()
    finally:
        victim.stop()

    # PostgreSQL rolled the cut-off transaction back: the data is as before the restore, sequences too; and it
    # released the lock with the session, at once.
    wait_for(lambda: sessions(celery_env.db_url) == 0, 15, what="the killed restore's session to end")
    wait_for(lambda: not joblock.holders(celery_env.db_url), 5, interval=0.02, what="the lock to be free")
    assert time.monotonic() - killed < 5
    assert_same(before, snapshot(celery_env.db_url))

    survivor = Worker(celery_env.env, tmp_path / "survivor.log").wait_ready()
    try:
        restored = backupctl(celery_env, "restore", name, "--yes")
        assert restored.returncode == 0, restored.stderr
        assert restore_id not in survivor.output()  # acknowledged on start: never delivered a second time
    finally:
        survivor.stop()
    after = snapshot(celery_env.db_url)
    assert after["tables"]["public.events"][0] == ROWS and after != before


def _report(title: str, figures: dict) -> None:
    print(f"\n{title}: {figures}")
    path = os.environ.get("BT_CRASH_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"test": title, **figures}) + "\n")


def _follow_into(app, task_id: str, out: list, timeout_s: float = 30) -> None:
    """Follow the job as `backupctl wait` does; out = [the error it ended with, time.monotonic() then]."""
    try:
        follow(app, task_id, timeout_s=timeout_s)
    except BaseException as exc:  # noqa: BLE001
        out.extend([exc, time.monotonic()])


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


def test_a_late_acked_job_delivered_too_often_is_not_run_again(celery_env, worker, client_app):
    """The delivery count (before_start): a job whose worker died under it MAX_DELIVERIES times (simulated by
    the count already at the limit) fails instead of running, and killing its worker, once more."""
    from backup_tasks import queue_state
    from backup_tasks.errors import BackupError
    from backup_tasks.tasks import MAX_DELIVERIES

    task_id = "00000000-0000-4000-8000-000000000042"
    for _ in range(MAX_DELIVERIES):
        queue_state.count_delivery(task_id, 0, celery_env.redis())
    client_app.signature("backup_tasks.create", kwargs={}).apply_async(task_id=task_id)
    with pytest.raises(BackupError, match=f"create was delivered {MAX_DELIVERIES + 1} times"):
        outcome(follow(client_app, task_id, timeout_s=30), task_id)
    assert not list(celery_env.backup_dir.glob("*.backup.gz"))
