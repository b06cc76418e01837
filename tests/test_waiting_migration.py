"""A migration's lock request that arrives while a job holds its tables, and a second session of that job.

A parallel backup's part and a diff's row reader are second sessions in the job's snapshot. The job's own
session holds ACCESS SHARE on every table; an ALTER TABLE that arrives then waits for it, and a new session's read
of that table queues behind the ALTER. Before, the part (or the reader) waited for the ALTER, the ALTER for the
job, the job for its part: a cycle the server cannot see, so nothing ended it (no lock timeout on those sessions),
and every query of the application on the table queued behind the ALTER for as long. Now the second session locks
its tables NOWAIT as it joins the snapshot (as pg_dump -j's workers do): the job fails at once, naming the table,
marked transient (a queued backup is retried), nothing is left behind, and the migration goes on.
"""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

import psycopg2
import pytest

from backup_tasks.core import calculate_diff, run_backup
from backup_tasks.core.destination import LocalPartStore
from backup_tasks.core.parallel import ProcessRunner, run_parallel_backup
from backup_tasks.errors import BackupError, Transient
from backup_tasks.pg.diff_ops import DiffSession
from tests.conftest import ADMIN_URL, query, run_sql, wait_for

HANG_S = 60  # far longer than the job takes when it does not wait (well under a second here)


class Migration:
    """`ALTER TABLE orders ADD COLUMN …` on a session of its own, started while the job holds its locks."""

    def __init__(self, url: str):
        self.url, self.database = url, url.rsplit("/", 1)[1]
        self.conn = psycopg2.connect(url)
        self.conn.autocommit = True
        self.pid = self.conn.get_backend_pid()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._alter, daemon=True)

    def _alter(self) -> None:
        try:
            self.conn.cursor().execute("ALTER TABLE orders ADD COLUMN note text")
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def arrive(self) -> None:
        """Start the ALTER and return once it waits for its lock."""
        self.thread.start()
        wait_for(lambda: query(ADMIN_URL, "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                               (self.pid,)) == [("Lock",)], 30, interval=0.02, what="the ALTER waiting for its lock")

    def finished(self) -> bool:
        self.thread.join(30)
        return not self.thread.is_alive() and self.error is None

    def end(self) -> None:
        """Whatever happened: the ALTER's session ends, so a job that waited for it is released."""
        query(ADMIN_URL, "SELECT pg_terminate_backend(%s)", (self.pid,))
        self.thread.join(30)
        self.conn.close()


@pytest.fixture
def shop(make_db) -> str:
    _, url = make_db()
    run_sql(url, """
        CREATE TABLE customers (id int PRIMARY KEY, name text);
        INSERT INTO customers SELECT i, 'customer ' || i FROM generate_series(1, 500) i;
        CREATE TABLE orders (id int PRIMARY KEY, customer int REFERENCES customers, total numeric);
        INSERT INTO orders SELECT i, 1 + i % 500, i * 1.5 FROM generate_series(1, 5000) i;
    """)
    return url


def _in_time(job, migration: Migration):
    """Run job() in a thread; if it has not ended within HANG_S, end the ALTER (which releases a job stuck behind
    it) and fail: the job hung on the cycle."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = job()
        except BaseException as exc:  # noqa: BLE001 - inspected by the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(HANG_S)
    if thread.is_alive():
        migration.end()
        thread.join(30)
        pytest.fail(f"the job waited behind the migration for {HANG_S} s (the deadlock the server cannot see)")
    return outcome, time.monotonic() - started


class _MigrationDuringParts:
    """A PartRunner whose parts start only once the migration waits behind the coordinator's locks."""

    def __init__(self, inner: ProcessRunner, migration: Migration):
        self.inner, self.migration = inner, migration

    def run(self, parts, task, on_done, keepalive, progress) -> None:
        self.migration.arrive()
        self.inner.run(parts, task, on_done, keepalive, progress)

    def read(self, output: str):
        return self.inner.read(output)

    def remove(self, output: str) -> None:
        self.inner.remove(output)


def test_a_parallel_backup_stops_at_once_for_a_waiting_migration(shop, tmp_path: Path):
    """With the shipped defaults (EngineOptions()): the part fails at once, the backup fails naming the table and
    the part, marked transient; no file and no part is left; the migration then completes."""
    out = tmp_path / "out"
    migration = Migration(shop)
    runner = _MigrationDuringParts(ProcessRunner(2, LocalPartStore(out), secrets.token_hex(4)), migration)
    try:
        outcome, seconds = _in_time(lambda: run_parallel_backup(out, database_url=shop, runner=runner), migration)
        error = outcome.get("error")
        assert isinstance(error, BackupError), outcome
        assert 'could not obtain lock on relation "public.orders"' in error.message, error.message
        assert error.message.startswith("part 1 (") and "second session" in error.message, error.message
        assert error.transient is Transient.DATABASE
        assert "Nothing was written" in error.hint
        assert list(out.iterdir()) == []
        assert migration.finished(), migration.error  # the backup's locks are gone: the ALTER went on
        print(f"failed after {seconds:.2f} s")
    finally:
        migration.end()
    assert query(shop, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders' "
                       "AND column_name = 'note'") == [(1,)]
    # And once the migration is done, the backup runs through.
    again = run_parallel_backup(out, database_url=shop,
                                runner=ProcessRunner(2, LocalPartStore(out), secrets.token_hex(4)))
    assert [t.rows for t in again.tables] == [500, 5000]


def test_a_diff_stops_at_once_for_a_waiting_migration(shop, tmp_path: Path, monkeypatch):
    """The detailed diff (what `restore` shows before it asks, `--dry-run`, `diff`): the database's side is read
    by a child process in the diff's snapshot, after the diff's own session counted (and so locked) every table.
    The migration arrives between the two."""
    backup = run_backup(tmp_path, database_url=shop)
    migration = Migration(shop)
    export = DiffSession.export_snapshot

    def export_then_migration(self):
        snapshot = export(self)
        migration.arrive()  # the counts hold their ACCESS SHARE locks; the reader has not started
        return snapshot

    monkeypatch.setattr(DiffSession, "export_snapshot", export_then_migration)
    try:
        outcome, seconds = _in_time(lambda: calculate_diff(Path(backup.path), database_url=shop), migration)
        error = outcome.get("error")
        assert isinstance(error, BackupError), outcome
        assert 'could not obtain lock on relation "' in error.message, error.message
        assert error.transient is Transient.DATABASE
        assert migration.finished(), migration.error
        print(f"failed after {seconds:.2f} s")
    finally:
        migration.end()
    monkeypatch.undo()
    # Once the migration is done the diff runs through: customers compared row by row, orders (whose columns
    # changed since the backup) by its counts.
    tables = calculate_diff(Path(backup.path), database_url=shop).tables
    customers, orders = tables["customers"], tables["orders"]
    assert (customers.to_insert, customers.to_delete, customers.to_change) == (0, 0, 0), customers
    assert (orders.current_rows, orders.backup_rows) == (5000, 5000), orders
