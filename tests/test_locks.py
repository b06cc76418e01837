"""The job lock on the real PostgreSQL (pg/joblock.py) and the queue's state on the real Redis (queue_state.py).

The lock: exclusive for a restore, shared for backups and diffs, per database whatever the connection string's
form, the holder named from its session, freed the moment its holder's process dies (no TTL), taken again by
its watcher when the session alone is ended, never confused with an application's own advisory locks.
Redis: liveness keys that outlive their TTL only while renewed, schedule slot claims, delivery counts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psycopg2
import pytest
import redis

from backup_tasks import queue_state
from backup_tasks.errors import BusyError, DatabaseError
from backup_tasks.pg import joblock
from backup_tasks.pg.joblock import EXCLUSIVE, SHARED, JobLock
from tests.celery_worker import *  # noqa: F403
from tests.celery_worker import REDIS_HOST, REDIS_PORT, flush_except_claim
from tests.conftest import run_sql, wait_for


@pytest.fixture
def r(redis_db):
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=redis_db)
    flush_except_claim(client)
    yield client
    flush_except_claim(client)


@pytest.fixture
def db(make_db) -> tuple[str, str]:
    return make_db()


def keyword_form(name: str) -> str:
    return f"host=127.0.0.1 port=5432 dbname={name} user=postgres password=ignored-by-trust"


def take(url: str, mode: str, job: str = "restore", owner: str = "task-1") -> JobLock:
    lock = JobLock(url, mode, job, owner)
    lock.acquire()
    return lock


def test_an_exclusive_lock_refuses_everyone_else_and_names_the_holder(db):
    name, url = db
    first = take(url, EXCLUSIVE, owner="restore-1")
    try:
        with pytest.raises(BusyError) as info:
            take(url, EXCLUSIVE, owner="restore-2")
        assert f"database {name} on localhost:5432 is being restored by job restore-1 (restore); not starting " \
               "restore" == info.value.message
        assert "backupctl wait restore-1" in info.value.hint and info.value.exit_code == 8
        with pytest.raises(BusyError, match="not starting create"):
            take(url, SHARED, job="create", owner="backup-1")
    finally:
        first.release()
    take(url, SHARED, job="create", owner="backup-1").release()


def test_shared_holders_coexist_and_keep_a_restore_out(db):
    _, url = db
    a, b = take(url, SHARED, job="create", owner="a"), take(url, SHARED, job="diff", owner="b")
    with pytest.raises(BusyError, match="is being backed up by job a"):
        take(url, EXCLUSIVE)
    a.release()
    with pytest.raises(BusyError, match="is being read by diff by job b"):
        take(url, EXCLUSIVE)
    b.release()
    take(url, EXCLUSIVE).release()


def test_the_lock_is_per_database_whatever_form_the_connection_string_takes(make_db):
    (name, url), (_, other_url) = make_db(), make_db()
    held = take(url, EXCLUSIVE)
    try:
        for spelling in (keyword_form(name), url.replace("localhost", "127.0.0.1")):
            with pytest.raises(BusyError):
                take(spelling, SHARED, job="create")
        take(other_url, EXCLUSIVE).release()  # another database: its own lock
    finally:
        held.release()


def test_a_local_holder_is_named_by_pid_and_host(db):
    _, url = db
    held = take(url, EXCLUSIVE, owner=joblock.local_owner())
    try:
        with pytest.raises(BusyError) as info:
            take(url, SHARED, job="create")
        assert f"by a --local restore (pid {os.getpid()} on " in info.value.message
        assert [h.task_id for h in joblock.holders(url)] == [None]
    finally:
        held.release()


def test_applications_advisory_locks_do_not_conflict(db):
    """One-bigint locks (objsubid 1) never meet the two-int key; other two-int keys neither."""
    _, url = db
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s), pg_advisory_lock(%s::bigint), pg_advisory_lock(7, 1)",
                        (joblock.KEY_CLASS, (joblock.KEY_CLASS << 32) | joblock.KEY_JOB))
        take(url, EXCLUSIVE).release()
    finally:
        conn.close()


_HOLDER = """
import sys
from backup_tasks.pg.joblock import JobLock
JobLock(sys.argv[1], "exclusive", "restore", "killed-task").acquire()
print("held", flush=True)
sys.stdin.read()
"""


def test_a_killed_holder_frees_the_lock_at_once(db):
    _, url = db
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(BusyError, match="by job killed-task"):
            take(url, EXCLUSIVE)
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
    finally:
        proc.kill()
        proc.wait(timeout=10)
    wait_for(lambda: not joblock.holders(url), 5, interval=0.02, what="the server to release the lock")
    freed_after = time.monotonic() - killed
    take(url, EXCLUSIVE).release()
    assert freed_after < 1.0, freed_after  # the server ends the session when the socket closes: no TTL


def test_the_watcher_takes_the_lock_again_when_only_its_session_ends(db):
    _, url = db
    lock = take(url, EXCLUSIVE, owner="long-restore")
    try:
        old_pid = lock.backend_pid
        run_sql(url, f"SELECT pg_terminate_backend({old_pid})")  # a DBA ends the lock's session, not the job
        wait_for(lambda: lock.backend_pid not in (None, old_pid), 10, what="the lock to be taken again")
        with pytest.raises(BusyError, match="by job long-restore"):
            take(url, EXCLUSIVE)
    finally:
        lock.release()
    assert joblock.holders(url) == []


def test_the_lock_session_keeps_alive_and_names_itself(db):
    name, url = db
    lock = take(keyword_form(name), SHARED, job="diff", owner="t-9")
    try:
        conn = psycopg2.connect(url)
        with conn.cursor() as cur:
            cur.execute("SELECT application_name FROM pg_stat_activity WHERE pid = %s", (lock.backend_pid,))
            assert cur.fetchone()[0] == "backup_tasks:diff:t-9"
        conn.close()
        assert [(h.job, h.task_id, h.mode) for h in joblock.holders(url)] == [("diff", "t-9", SHARED)]
    finally:
        lock.release()


def test_an_unreachable_database_is_a_database_error_without_the_password(db):
    name, _ = db
    with pytest.raises(DatabaseError) as info:
        take(keyword_form(name).replace("5432", "1"), EXCLUSIVE)
    assert "ignored-by-trust" not in info.value.message and "cannot connect" in info.value.message


def test_only_one_of_many_concurrent_restores_gets_the_lock(db):
    _, url = db
    won, refused = [], []

    def attempt(i: int) -> None:
        try:
            won.append(take(url, EXCLUSIVE, owner=f"t{i}"))
        except BusyError:
            refused.append(i)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 19
    won[0].release()


# --- Redis: liveness, slots, deliveries -------------------------------------------------------------------

def test_the_liveness_key_outlives_its_ttl_only_while_renewed(r):
    with queue_state.alive_while("task-9", r, ttl_s=0.6, every_s=0.2):
        time.sleep(1.5)  # 2.5 TTLs
        assert queue_state.job_alive("task-9", r)
    assert not queue_state.job_alive("task-9", r)  # removed at the end, not left to lapse

    beat = queue_state.Heartbeat(r, "task-10", ttl_s=0.5, every_s=0.2)
    beat.start()
    beat._stop.set()  # a process that stops renewing (killed): the key lapses after its TTL
    beat._thread.join()
    assert queue_state.job_alive("task-10", r)
    time.sleep(0.7)
    assert not queue_state.job_alive("task-10", r)


def test_a_waiting_client_calls_a_job_lost_within_half_a_minute():
    assert queue_state.LIVENESS_TTL_S + queue_state.LOST_AFTER_S + 1 <= 30
    assert queue_state.LIVENESS_TTL_S >= 4 * queue_state.LIVENESS_RENEW_S  # late renewals are absorbed


def test_a_schedule_slot_is_claimed_once(r):
    url, slot = "postgresql://u:secret@localhost/app", "2025-11-05T02:00Z"
    assert queue_state.claim_slot(url, slot, "beat-1", r) == ("claimed", None)
    assert queue_state.claim_slot(url, slot, "beat-2", r) == ("taken", "beat-1")  # a second Beat's message
    assert queue_state.claim_slot(url, slot, "beat-1", r) == ("resume", None)  # beat-1 redelivered before its backup
    queue_state.slot_created(url, slot, "beat-1", "backup_20251105_020001.backup.gz", r)
    assert queue_state.claim_slot(url, slot, "beat-1", r) == ("created", "backup_20251105_020001.backup.gz")
    assert queue_state.claim_slot(url, slot, "beat-2", r) == ("taken", "beat-1")
    assert queue_state.claim_slot(url, "2025-11-06T02:00Z", "beat-2", r) == ("claimed", None)  # the next slot
    key = queue_state.slot_key(url, slot)
    assert key == f"backup_tasks:slot:localhost:5432/app:{slot}" and "secret" not in key
    assert queue_state.slot_key("host=127.0.0.1 dbname=app password=secret", slot) == key  # either form
    assert 0 < r.ttl(key) <= queue_state.SLOT_TTL_S


def test_deliveries_are_counted_per_attempt(r):
    assert [queue_state.count_delivery("t", 0, r) for _ in range(3)] == [1, 2, 3]
    assert queue_state.count_delivery("t", 1, r) == 1  # a retry is a new attempt
