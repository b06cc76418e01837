"""A database of many small tables is read by two sessions in one snapshot (pg/snapshot.py side_reader).

What must hold: the second session reads exactly the snapshot the first one does (rows committed after the backup
began are in neither), the tables come out in order, a backup of many small tables through the command line with
the shipped defaults restores equal by the oracle, and a lock the second session would have to queue for (a
migration waiting behind the backup) leaves the whole backup to the first session instead of hanging it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest

from backup_tasks.core import restore_backup
from backup_tasks.pg import snapshot as snap_mod
from backup_tasks.pg.connection import connect
from backup_tasks.pg.snapshot import END, is_small, iter_table_batches, open_backup_snapshot, side_reader
from tests.conftest import query, run_sql, wait_for
from tests.oracle import assert_same, snapshot

TABLES = 120  # above SIDE_READER_MIN_TABLES (100), the shipped threshold
BUDGET = 4 * 1024 * 1024


def _schema(url: str, rows: int = 5) -> None:
    run_sql(url, "".join(
        f"CREATE TABLE t{i:03d} (id int PRIMARY KEY, v text, n numeric, at timestamptz);"
        f"INSERT INTO t{i:03d} SELECT g, 'row ' || g || E' \\t\"x\"', g * 1.5, '2024-01-01'::timestamptz + g * "
        f"interval '1 hour' FROM generate_series(1, {rows}) g;" for i in range(TABLES)))


def _read_all(conn, tables, url):
    """{table index: rows} from iter_table_batches, checking every table's batches come in order with one END."""
    rows: dict[int, list] = {}
    order: list[int] = []
    for index, batch, _sizer in iter_table_batches(conn, tables, BUDGET, url=url):
        if batch is END:
            order.append(index)
            continue
        assert not order or index > order[-1], "a batch of a table already ended"
        rows.setdefault(index, []).extend(batch)
    assert order == list(range(len(tables)))
    return rows


def test_both_sessions_read_the_backups_snapshot(make_db, monkeypatch):
    _, url = make_db()
    _schema(url)
    used = []
    real = snap_mod.side_reader

    def spy(*args, **kwargs):
        with real(*args, **kwargs) as side:
            used.append(side)
            yield side

    monkeypatch.setattr(snap_mod, "side_reader", contextmanager(spy))
    conn = connect(url)
    try:
        info = open_backup_snapshot(conn, 60)
        # Committed after the snapshot: neither session may see these rows.
        run_sql(url, "".join(f"INSERT INTO t{i:03d} VALUES (1000, 'late', 0, now());" for i in range(TABLES)))
        rows = _read_all(conn, info.catalog.tables, url)
    finally:
        conn.close()
    assert used and used[0] is not None and len(used[0].indices) == TABLES // 2, "the second session did not read"
    assert all(len(r) == 5 and all(row[0] != 1000 for row in r) for r in rows.values())
    assert len(rows) == TABLES


def test_a_waiting_lock_leaves_the_backup_to_one_session(make_db):
    _, url = make_db()
    _schema(url)
    conn = connect(url)
    blocker = psycopg2.connect(url)
    blocked = threading.Thread(target=lambda: blocker.cursor().execute("LOCK TABLE t001 IN ACCESS EXCLUSIVE MODE"))
    try:
        info = open_backup_snapshot(conn, 60)
        tables = info.catalog.tables
        blocked.start()  # queues behind the backup's ACCESS SHARE: a new ACCESS SHARE on t001 would queue behind it
        waiting = ("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                   "WHERE c.relname = 't001' AND NOT l.granted "
                   "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())")
        wait_for(lambda: query(url, waiting)[0][0] == 1, 30, what="the waiter")
        with side_reader(url, conn, tables, [is_small(t, BUDGET) for t in tables]) as side:
            assert side is None, "the second session took its locks although a lock request waits"
        # A closed connection's backend leaves pg_stat_activity a moment after the client closed it (seen once
        # on a loaded machine): closed means gone within seconds, a session left open stays.
        wait_for(lambda: query(url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                    "'backup_tasks_reader' AND datname = current_database()")[0][0] == 0,
                 10, what="the refused session to be closed")
        rows = _read_all(conn, tables, url)  # the backup's own session already holds every lock: it never waits
        assert len(rows) == TABLES and all(len(r) == 5 for r in rows.values())
    finally:
        conn.close()  # the backup ends: the waiter gets its lock
        blocked.join(30)
        blocker.close()
    assert not blocked.is_alive()


def test_a_backup_of_many_small_tables_restores_equal_with_the_defaults(make_db, backup_dir: Path):
    _, url = make_db()
    _, target = make_db()
    _schema(url, rows=40)
    _schema(target, rows=3)
    run_sql(target, "UPDATE t007 SET v = 'changed'; DELETE FROM t100;")
    before = snapshot(url)
    env = {**os.environ, "DATABASE_URL": url, "BACKUP_DIR": str(backup_dir)}
    done = subprocess.run([sys.executable, "-m", "backup_tasks", "create", "--local"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (path,) = backup_dir.glob("*.backup.gz")
    result = restore_backup(path, database_url=target)
    assert result.success and result.restored_rows == TABLES * 40
    assert_same(before, snapshot(target))


def test_a_role_limited_to_one_connection_backs_up_on_one_session(make_db, backup_dir: Path):
    """Managed databases often cap a role's connections: the second session is refused, and the backup goes on
    without it, complete."""
    _, url = make_db()
    role = f"one_conn_{os.getpid()}"
    run_sql(url, f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1; GRANT pg_read_all_data TO {role}")
    try:
        _schema(url)
        limited = url.replace("postgres@", f"{role}@", 1)
        conn = connect(limited)
        try:
            tables = open_backup_snapshot(conn, 60).catalog.tables
            with side_reader(limited, conn, tables, [is_small(t, BUDGET) for t in tables]) as side:
                assert side is None, "a second connection was made past the role's limit"
            rows = _read_all(conn, tables, limited)
            assert len(rows) == TABLES and all(len(r) == 5 for r in rows.values())
        finally:
            conn.close()
    finally:
        run_sql(url, f"DROP OWNED BY {role}; DROP ROLE {role}")


@pytest.mark.parametrize("count, expected", [(TABLES, TABLES // 2), (99, 0)])
@pytest.mark.parametrize("form", ["url", "key-value"])
def test_the_second_session_starts_from_the_shipped_threshold(make_db, count, expected, form):
    name, url = make_db()
    run_sql(url, "".join(f"CREATE TABLE s{i:03d} (id int);" for i in range(count)))
    if form == "key-value":  # the DATABASE_URL form libpq also takes; the second session connects with it too
        parsed = urlsplit(url)
        url = f"host={parsed.hostname} port={parsed.port or 5432} user={parsed.username} dbname={name}"
    conn = connect(url)
    try:
        tables = open_backup_snapshot(conn, 60).catalog.tables
        with side_reader(url, conn, tables, [is_small(t, BUDGET) for t in tables]) as side:
            assert (len(side.indices) if side else 0) == expected
    finally:
        conn.close()
