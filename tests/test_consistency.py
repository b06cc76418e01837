"""Issue 2 acceptance: a backup taken while the application writes is one consistent moment.

A writer thread (its own connection) moves money between accounts held in two tables, `checking` and `savings`,
and appends every move to a `transfers` ledger (FKs to both), in many small transactions, while the backup runs.
Restored into a fresh database, the backup must keep the invariants: the total is unchanged, and every account's
balance equals its opening balance plus its ledger entries. Without one snapshot the tables would be read at
different moments (checking first, transfers last) and both invariants would break.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import psycopg2
import pytest

from backup_tasks.core import create_backup, restore_backup
from tests.conftest import query, run_sql

ACCOUNTS = 100_000  # per table: 200k accounts, big enough that the backup overlaps many writer commits
OPENING = 1000

SCHEMA = """
CREATE TABLE checking (id int PRIMARY KEY, balance bigint NOT NULL, owner text NOT NULL);
CREATE TABLE savings (id int PRIMARY KEY, balance bigint NOT NULL, owner text NOT NULL);
CREATE TABLE transfers (
    id bigserial PRIMARY KEY,
    from_checking int REFERENCES checking (id),
    from_savings int REFERENCES savings (id),
    to_checking int REFERENCES checking (id),
    to_savings int REFERENCES savings (id),
    amount bigint NOT NULL CHECK (amount > 0),
    CHECK ((from_checking IS NULL) <> (from_savings IS NULL)),
    CHECK ((to_checking IS NULL) <> (to_savings IS NULL))
);
"""

DATA = f"""
INSERT INTO checking SELECT i, {OPENING}, 'owner ' || i || repeat('x', 40) FROM generate_series(1, {ACCOUNTS}) i;
INSERT INTO savings SELECT i, {OPENING}, 'owner ' || i || repeat('y', 40) FROM generate_series(1, {ACCOUNTS}) i;
"""

INVARIANTS = f"""
WITH moves AS (
    SELECT 'c' AS kind, from_checking AS id, -amount AS delta FROM transfers WHERE from_checking IS NOT NULL
    UNION ALL SELECT 's', from_savings, -amount FROM transfers WHERE from_savings IS NOT NULL
    UNION ALL SELECT 'c', to_checking, amount FROM transfers WHERE to_checking IS NOT NULL
    UNION ALL SELECT 's', to_savings, amount FROM transfers WHERE to_savings IS NOT NULL
), net AS (SELECT kind, id, sum(delta) AS delta FROM moves GROUP BY kind, id),
balances AS (
    SELECT 'c' AS kind, id, balance FROM checking UNION ALL SELECT 's', id, balance FROM savings
)
SELECT (SELECT sum(balance) FROM balances),
       (SELECT count(*) FROM balances b LEFT JOIN net n USING (kind, id)
         WHERE b.balance <> {OPENING} + coalesce(n.delta, 0)),
       (SELECT count(*) FROM transfers)
"""


class Writer(threading.Thread):
    """Many small transactions, each moving money between two accounts and recording it in the ledger."""

    def __init__(self, url: str):
        super().__init__(name="money-mover", daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.commits = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(7)
        conn = psycopg2.connect(self.url)
        try:
            with conn.cursor() as cur:
                while not self.stop.is_set():
                    src, dst = rng.choice("cs"), rng.choice("cs")
                    a, b = rng.randint(1, ACCOUNTS), rng.randint(1, ACCOUNTS)
                    amount = rng.randint(1, 50)
                    src_table = "checking" if src == "c" else "savings"
                    dst_table = "checking" if dst == "c" else "savings"
                    cur.execute(f"UPDATE {src_table} SET balance = balance - %s WHERE id = %s", (amount, a))
                    cur.execute(f"UPDATE {dst_table} SET balance = balance + %s WHERE id = %s", (amount, b))
                    cur.execute(
                        "INSERT INTO transfers (from_checking, from_savings, to_checking, to_savings, amount) "
                        "VALUES (%s, %s, %s, %s, %s)",
                        (a if src == "c" else None, a if src == "s" else None,
                         b if dst == "c" else None, b if dst == "s" else None, amount))
                    conn.commit()
                    self.commits += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            conn.close()


def _invariants(url: str) -> tuple[int, int, int]:
    total, broken, ledger = query(url, INVARIANTS)[0]
    return int(total), int(broken), int(ledger)


@pytest.mark.slow
def test_backup_during_concurrent_transfers_is_consistent(make_db, backup_dir):
    _, url = make_db()
    run_sql(url, SCHEMA + DATA + "ANALYZE;")
    total = 2 * ACCOUNTS * OPENING

    writer = Writer(url)
    writer.start()
    try:
        deadline = time.monotonic() + 10
        while writer.commits < 50 and writer.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer.error is None and writer.commits >= 50, "the writer did not get going"
        commits_at_start = writer.commits
        ledger_at_start = _invariants(url)[2]
        path = create_backup(backup_dir, database_url=url)
        commits_at_end = writer.commits
    finally:
        writer.stop.set()
        writer.join(timeout=30)
    assert writer.error is None, writer.error
    assert commits_at_end - commits_at_start >= 10, (commits_at_start, commits_at_end)  # they overlapped

    live_total, live_broken, live_ledger = _invariants(url)
    assert (live_total, live_broken) == (total, 0)  # the writer itself is correct

    _, fresh = make_db()
    run_sql(fresh, SCHEMA)
    restore_backup(Path(path), database_url=fresh)
    restored_total, restored_broken, restored_ledger = _invariants(fresh)
    assert restored_total == total
    assert restored_broken == 0
    # The backup is one moment strictly inside the run: after the writer's earlier commits, before its later ones.
    assert ledger_at_start <= restored_ledger < live_ledger
