"""Issue 15: a backup written in parts at once, in one snapshot, is still the one seed-format document.

Local runs (`--local --jobs N`: a pool of processes); the queued runs, on Celery workers, are in
tests/test_celery_parallel.py. Fidelity by the independent oracle; the document compared byte for byte with the
one a single process writes.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import secrets
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from backup_tasks.core import calculate_diff, restore_backup, run_backup, verify_backup
from backup_tasks.core.destination import LocalPartStore
from backup_tasks.core.options import EngineOptions
from backup_tasks.core.parallel import ProcessRunner, run_parallel_backup
from backup_tasks.errors import BackupError
from tests.conftest import ADMIN_URL, query, run_sql, wait_for
from tests.oracle import assert_same, snapshot
from tests.test_consistency import DATA, SCHEMA, Writer, _invariants
from tests.test_torture_roundtrip import torture_sections

SPLIT_EVERYTHING = EngineOptions(split_min_bytes=64 * 1024)  # every table of more than 64 KiB is split


def parallel(out: Path, url: str, jobs: int, options: EngineOptions = SPLIT_EVERYTHING):
    runner = ProcessRunner(jobs, LocalPartStore(out), secrets.token_hex(4))
    return run_parallel_backup(out, database_url=url, runner=runner, options=options)


def document(path: str) -> bytes:
    """The decompressed document with the snapshot's timestamp blanked (the one field two backups differ in)."""
    return re.sub(rb'"timestamp":"[^"]*"', b'"timestamp":""', gzip.decompress(Path(path).read_bytes()), count=1)


@pytest.fixture
def shop(make_db) -> str:
    _, url = make_db()
    run_sql(url, """
        CREATE TABLE big (id int PRIMARY KEY, v text, n numeric);
        INSERT INTO big SELECT i, md5(i::text), i / 3.0 FROM generate_series(1, 60000) i;
        CREATE TABLE wide (id int PRIMARY KEY, body text);
        ALTER TABLE wide ALTER COLUMN body SET STORAGE EXTERNAL;
        INSERT INTO wide SELECT i, repeat(md5(i::text), 2000) FROM generate_series(1, 40) i;
        CREATE TABLE small (id serial PRIMARY KEY, v text); INSERT INTO small (v) VALUES ('a'), ('b');
        CREATE TABLE empty_one (id int);
        SELECT lo_from_bytea(0, 'a large object'), lo_from_bytea(0, ''), lo_from_bytea(0, repeat('x', 3000000)::bytea);
        DELETE FROM big WHERE id % 7 = 0;  -- holes in the pages, as real tables have
        ANALYZE;
    """)
    return url


def test_parts_make_the_document_one_process_writes_byte_for_byte(shop, tmp_path):
    one, four = tmp_path / "one", tmp_path / "four"
    single = run_backup(one, database_url=shop, options=SPLIT_EVERYTHING)
    split = parallel(four, shop, 4)
    assert split.parts >= 6  # big and wide split into ranges; the small tables and the large objects in parts
    assert document(split.path) == document(single.path)
    assert [(t.name, t.rows, t.bytes) for t in split.tables] == [(t.name, t.rows, t.bytes) for t in single.tables]
    assert (split.uncompressed_bytes, split.large_objects, split.large_object_bytes) == (
        single.uncompressed_bytes, single.large_objects, single.large_object_bytes)
    # Every reader takes it: gzip itself, json.load, our verify (the sidecar covers the whole file), sha256sum.
    assert subprocess.run(["gzip", "-t", split.path]).returncode == 0
    assert set(json.load(gzip.open(split.path))) == {"metadata", "tables", "large_objects"}
    assert verify_backup(Path(split.path)).checksum == "ok"
    assert subprocess.run(["sha256sum", "-c", Path(split.path).name + ".sha256"], cwd=four,
                          capture_output=True).returncode == 0
    diff = calculate_diff(Path(split.path), database_url=shop)
    assert all((d.to_insert, d.to_delete, d.to_change) in ((0, 0, 0), (None, None, None))
               for d in diff.tables.values())
    # Nothing of the parts is left next to the backup.
    assert sorted(p.name for p in four.iterdir()) == sorted(
        [Path(split.path).name, Path(split.path).name + ".sha256", Path(split.path).name + ".manifest.json"])


def test_a_split_table_of_every_type_round_trips_exactly(make_db, tmp_path):
    _, url = make_db()
    schema, data = torture_sections()
    run_sql(url, schema)
    run_sql(url, data)
    run_sql(url, "INSERT INTO all_types (label, num) SELECT 'filler ' || i, i FROM generate_series(1, 3000) i")
    before = snapshot(url)
    result = parallel(tmp_path, url, 3, EngineOptions(split_min_bytes=16 * 1024))
    assert any(t.name == "all_types" for t in result.tables) and result.parts > 10
    _, fresh = make_db()
    run_sql(fresh, schema)
    restore_backup(Path(result.path), database_url=fresh)
    assert_same(before, snapshot(fresh))


@pytest.mark.slow
def test_concurrent_writers_with_three_jobs_see_one_moment(make_db, tmp_path):
    _, url = make_db()
    run_sql(url, SCHEMA + DATA + "ANALYZE;")
    writer = Writer(url)
    writer.start()
    try:
        wait_for(lambda: writer.commits >= 50 or writer.error, 10, what="the writer to get going")
        ledger_at_start = _invariants(url)[2]
        result = parallel(tmp_path, url, 3, EngineOptions(split_min_bytes=1 << 20))
    finally:
        writer.stop.set()
        writer.join(timeout=30)
    assert writer.error is None, writer.error
    assert result.parts >= 6  # checking and savings in ranges, read by three processes at once
    _, fresh = make_db()
    run_sql(fresh, SCHEMA)
    restore_backup(Path(result.path), database_url=fresh)
    total, broken, ledger = _invariants(fresh)
    assert (total, broken) == (2 * 100_000 * 1000, 0)
    assert ledger_at_start <= ledger < _invariants(url)[2]


def test_the_snapshot_holder_terminated_fails_the_backup_and_leaves_nothing(shop, tmp_path):
    """pg_terminate_backend of the coordinator's session while parts run: the job fails, names the cause, and
    leaves no backup and no part behind."""
    import psycopg2

    out = tmp_path / "out"
    killed = []

    def kill_the_holder() -> None:
        # The coordinator's session is the one idle in its transaction while the parts' sessions read.
        database = shop.rsplit("/", 1)[1]

        def holder():
            rows = query(ADMIN_URL, "SELECT pid FROM pg_stat_activity WHERE application_name = 'backup_tasks' "
                                    "AND state = 'idle in transaction' AND datname = %s", (database,))
            parts = query(ADMIN_URL, "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                     "'backup_tasks_part' AND datname = %s", (database,))[0][0]
            return rows[0][0] if rows and parts else None
        pid = wait_for(holder, 30, interval=0.005, what="parts reading beside the snapshot holder")
        conn = psycopg2.connect(ADMIN_URL)
        conn.autocommit = True
        conn.cursor().execute("SELECT pg_terminate_backend(%s)", (pid,))
        conn.close()
        killed.append(pid)

    thread = threading.Thread(target=kill_the_holder)
    thread.start()
    with pytest.raises(BackupError) as info:
        parallel(out, shop, 2, EngineOptions(split_min_bytes=64 * 1024, batch_bytes=64 * 1024))
    thread.join()
    assert killed
    assert "snapshot" in info.value.message or "terminat" in info.value.message, info.value.message
    assert list(out.iterdir()) == []


def test_a_failing_part_fails_the_backup_naming_it(shop, tmp_path):
    """A part whose session is terminated: the whole backup fails with the part named, nothing is kept."""

    out = tmp_path / "out"
    run_sql(shop, "INSERT INTO big SELECT i, repeat(md5(i::text), 8), i FROM generate_series(100001, 400000) i")
    database = shop.rsplit("/", 1)[1]
    killed = []

    def kill_a_part() -> None:
        def part():
            rows = query(ADMIN_URL, "SELECT pid FROM pg_stat_activity WHERE application_name = 'backup_tasks_part' "
                                    "AND datname = %s AND query LIKE 'FETCH%%'", (database,))
            return rows[0][0] if rows else None
        pid = wait_for(part, 30, interval=0.002, what="a part reading")
        killed.extend(query(ADMIN_URL, "SELECT pg_terminate_backend(%s)", (pid,))[0])

    thread = threading.Thread(target=kill_a_part)
    thread.start()
    with pytest.raises(BackupError) as info:
        parallel(out, shop, 2, EngineOptions(split_min_bytes=64 << 20, batch_bytes=64 * 1024))
    thread.join()
    assert killed == [True]
    assert re.search(r"part \d+ \(.*\) failed: reading rows failed: (terminating|server closed)", info.value.message), \
        info.value.message
    assert list(out.iterdir()) == []


def test_local_jobs_from_the_command_line(shop, backup_dir):
    env = {**os.environ, "DATABASE_URL": shop, "BACKUP_DIR": str(backup_dir), "BACKUP_SPLIT_MIN_BYTES": "1048576"}
    proc = subprocess.run([str(Path(sys.executable).parent / "backupctl"), "create", "--local", "--jobs", "2"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (path,) = backup_dir.glob("backup_*.backup.gz")
    before = snapshot(shop)
    run_sql(shop, "DELETE FROM big WHERE id < 100")
    restore_backup(path, database_url=shop)
    assert_same(before, snapshot(shop))
