"""locks.py on the real Redis: database keys without secrets, exclusive/shared modes, owner tokens, TTL and
heartbeat, schedule slot claims and delivery counts."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from backup_tasks import locks
from backup_tasks.errors import BusyError
from tests.celery_worker import *  # noqa: F401,F403
from tests.celery_worker import REDIS_HOST, REDIS_PORT, flush_except_claim


@pytest.fixture
def r(redis_db):
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=redis_db)
    flush_except_claim(client)
    yield client
    flush_except_claim(client)


def lock(r, mode, job="restore", task="t1", ttl=3.0, db="localhost:5432/app"):
    return locks.DatabaseLock(db, mode, job, task, ttl, r)


@pytest.mark.parametrize("url, key", [
    ("postgresql://user:s3cret@db.example.com:6543/app", "db.example.com:6543/app"),
    ("postgresql://user:s3cret@DB.example.com/app?sslmode=require", "db.example.com:5432/app"),
    ("postgresql://postgres@localhost/app", "localhost:5432/app"),
    ("postgresql://postgres@127.0.0.1:5432/app", "localhost:5432/app"),
    ("postgresql:///app?host=/var/run/postgresql", "localhost:5432/app"),
    ("host=db.example.com port=5433 dbname=app user=u password=s3cret", "db.example.com:5433/app"),
])
def test_lock_keys_name_host_port_and_database_never_credentials(url, key):
    assert locks.database_key(url) == key
    assert "s3cret" not in locks.database_key(url) and "user" not in locks.database_key(url)


def test_an_exclusive_lock_refuses_everyone_else_and_names_the_holder(r):
    first = lock(r, locks.EXCLUSIVE, task="restore-1")
    first.acquire()
    with pytest.raises(BusyError) as info:
        lock(r, locks.EXCLUSIVE, task="restore-2").acquire()
    assert "is being restored by job restore-1 (restore); not starting restore" in info.value.message
    assert "backupctl wait restore-1" in info.value.hint
    with pytest.raises(BusyError, match="not starting create"):
        lock(r, locks.SHARED, job="create", task="backup-1").acquire()
    first.release()
    lock(r, locks.SHARED, job="create", task="backup-1").acquire()


def test_shared_holders_coexist_and_keep_a_restore_out(r):
    a, b = lock(r, locks.SHARED, job="create", task="a"), lock(r, locks.SHARED, job="diff", task="b")
    a.acquire()
    b.acquire()
    with pytest.raises(BusyError, match="is being backed up by job a|read by diff"):
        lock(r, locks.EXCLUSIVE).acquire()
    a.release()
    with pytest.raises(BusyError):
        lock(r, locks.EXCLUSIVE).acquire()
    b.release()
    lock(r, locks.EXCLUSIVE).acquire()


def test_release_compares_the_owner_token(r):
    mine = lock(r, locks.EXCLUSIVE, ttl=0.3)
    mine.acquire()
    time.sleep(0.5)  # lapsed; someone else takes it
    theirs = lock(r, locks.EXCLUSIVE, task="t2")
    theirs.acquire()
    mine.release()  # must not free theirs
    assert locks.holders("localhost:5432/app", r)["exclusive"][0]["task_id"] == "t2"
    assert not mine.renew()


def test_a_lock_lapses_after_its_ttl_and_shared_holders_expire_on_redis_time(r):
    lock(r, locks.EXCLUSIVE, ttl=0.3).acquire()
    lock(r, locks.SHARED, job="create", ttl=0.3, db="localhost:5432/other").acquire()
    time.sleep(0.5)
    lock(r, locks.EXCLUSIVE, task="t2").acquire()
    lock(r, locks.EXCLUSIVE, task="t3", db="localhost:5432/other").acquire()


def test_the_heartbeat_keeps_a_lock_and_the_liveness_key_past_the_ttl(r):
    with locks.job_lease("task-9", "restore", database_url="postgresql://u:p@localhost/app", mode=locks.EXCLUSIVE,
                         ttl_s=0.6, r=r):
        time.sleep(1.5)  # 2.5 TTLs
        assert locks.job_alive("task-9", r)
        with pytest.raises(BusyError):
            lock(r, locks.EXCLUSIVE, task="other").acquire()
    assert not locks.job_alive("task-9", r)
    assert locks.holders("localhost:5432/app", r) == {"exclusive": [], "shared": []}


def test_only_one_of_many_concurrent_restores_gets_the_lock(r):
    won, refused = [], []

    def attempt(i: int) -> None:
        try:
            lock(r, locks.EXCLUSIVE, task=f"t{i}").acquire()
            won.append(i)
        except BusyError:
            refused.append(i)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 19


def test_a_schedule_slot_is_claimed_once(r):
    db, slot = "localhost:5432/app", "2025-11-05T02:00Z"
    assert locks.claim_slot(db, slot, "beat-1", r) == ("claimed", None)
    assert locks.claim_slot(db, slot, "beat-2", r) == ("taken", "beat-1")  # a second Beat's message
    assert locks.claim_slot(db, slot, "beat-1", r) == ("resume", None)  # beat-1 redelivered before its backup
    locks.slot_created(db, slot, "beat-1", "backup_20251105_020001.backup.gz", r)
    assert locks.claim_slot(db, slot, "beat-1", r) == ("created", "backup_20251105_020001.backup.gz")
    assert locks.claim_slot(db, slot, "beat-2", r) == ("taken", "beat-1")
    assert locks.claim_slot(db, "2025-11-06T02:00Z", "beat-2", r) == ("claimed", None)  # the next slot
    assert 0 < r.ttl(locks.slot_key(db, slot)) <= locks.SLOT_TTL_S


def test_deliveries_are_counted_per_attempt(r):
    assert [locks.count_delivery("t", 0, r) for _ in range(3)] == [1, 2, 3]
    assert locks.count_delivery("t", 1, r) == 1  # a retry is a new attempt
