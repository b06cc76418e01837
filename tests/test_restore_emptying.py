"""How a restore empties its tables: DELETE for tables of a few pages (no new files, no unlinking at commit), TRUNCATE
for the others and wherever a DELETE would not remove exactly what TRUNCATE does (pg/restore_ops.empty_tables).

Each case is judged by the oracle (tests/oracle.py) against the database as it was backed up, with the shipped
defaults (DELETE_MAX_BYTES as it ships). The guard cases fail, by the oracle or by the restore's own error, if the
DELETE path is taken where it must not be: a DO INSTEAD rule, row-level security that hides rows from the restoring
role, a publication of deletes, a transaction snapshot older than the lock (a REPEATABLE READ default), and a role
that may TRUNCATE the table but not DELETE from it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg2
import pytest

from backup_tasks.core import create_backup, restore_backup
from backup_tasks.pg.restore_ops import DELETE_MAX_BYTES
from tests.conftest import db_url, query, run_sql
from tests.oracle import assert_same, snapshot

SCHEMA = """
CREATE TABLE small (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE big (id int PRIMARY KEY, pad text NOT NULL);
CREATE TABLE child (id int PRIMARY KEY, small_id int REFERENCES small ON DELETE CASCADE);
CREATE TABLE audit (at timestamptz DEFAULT now(), what text);
CREATE TABLE tags (id int PRIMARY KEY, label text);  -- no trigger, no key: nothing else locks it before the emptying
CREATE TABLE blobs (id int PRIMARY KEY, body text);  -- one heap page, 3 MB of TOAST
CREATE FUNCTION audit_delete() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN INSERT INTO audit (what) VALUES ('deleted ' || OLD.id); RETURN OLD; END $$;
CREATE TRIGGER small_audit AFTER DELETE ON small FOR EACH ROW EXECUTE FUNCTION audit_delete();
INSERT INTO small SELECT i, 'name ' || i FROM generate_series(1, 100) i;
INSERT INTO big SELECT i, repeat('x', 200) FROM generate_series(1, 5000) i;
INSERT INTO child SELECT i, i FROM generate_series(1, 50) i;
INSERT INTO tags SELECT i, 'tag ' || i FROM generate_series(1, 20) i;
INSERT INTO blobs SELECT i, (SELECT string_agg(md5(i::text || g::text), '') FROM generate_series(1, 32768) g)
    FROM generate_series(1, 3) i;
"""

CHANGES = "UPDATE small SET name = 'changed'; DELETE FROM child WHERE id > 40; INSERT INTO big VALUES (0, 'new');"


def _bytes(url: str, table: str) -> int:
    """Heap and TOAST on disk, as the catalog's data_bytes counts them."""
    return query(url, f"SELECT pg_relation_size('{table}') + coalesce(pg_total_relation_size(nullif("
                      f"(SELECT reltoastrelid FROM pg_class WHERE oid = '{table}'::regclass), 0)), 0)")[0][0]


def _filenode(url: str, table: str) -> int:
    return query(url, f"SELECT pg_relation_filenode('{table}')")[0][0]


@pytest.fixture
def db(make_db, backup_dir):
    _, url = make_db()
    run_sql(url, SCHEMA)
    assert _bytes(url, "small") <= DELETE_MAX_BYTES < _bytes(url, "big")
    assert _bytes(url, "blobs") > DELETE_MAX_BYTES
    before = snapshot(url)
    path = Path(create_backup(backup_dir, database_url=url))
    return url, path, before


def test_small_tables_are_emptied_by_delete_and_restored_exactly(db):
    url, path, before = db
    run_sql(url, CHANGES)
    small, big, blobs = _filenode(url, "small"), _filenode(url, "big"), _filenode(url, "blobs")
    result = restore_backup(path, database_url=url)
    assert_same(before, snapshot(url))
    # The small tables kept their files (DELETE), the big ones got new ones (TRUNCATE): by heap and by TOAST.
    assert _filenode(url, "small") == small and _filenode(url, "big") != big and _filenode(url, "blobs") != blobs
    # Neither the disabled user trigger nor the dropped ON DELETE CASCADE key acted on the DELETE.
    assert query(url, "SELECT count(*) FROM audit")[0][0] == 0
    assert query(url, "SELECT tgenabled FROM pg_trigger WHERE tgname = 'small_audit'")[0][0] == "O"
    # The counts preface, counted in the restore's transaction before the emptying.
    assert result.diff.tables["small"].current_rows == 100 and result.diff.tables["child"].current_rows == 40
    assert result.diff.tables["big"].current_rows == 5001 and result.diff.tables["big"].backup_rows == 5000


# What each guard prevents: a rule makes the DELETE delete nothing (the COPY then collides with the old rows); a
# published DELETE from a table without a replica identity (audit has no key) is refused; row-level security would
# hide rows from a DELETE by a role it applies to (there COPY FROM refuses anyway; the guard does not rely on it).
GUARDS = {
    "rule": "CREATE RULE keep_small AS ON DELETE TO small DO INSTEAD NOTHING",
    "publication": "CREATE PUBLICATION everything FOR ALL TABLES",
    "row security": "ALTER TABLE small ENABLE ROW LEVEL SECURITY; ALTER TABLE small FORCE ROW LEVEL SECURITY; "
                    "CREATE POLICY evens ON small USING (id % 2 = 0)",
}


@pytest.mark.parametrize("guard", list(GUARDS))
def test_where_delete_would_differ_the_table_is_truncated(db, guard):
    url, path, before = db
    run_sql(url, GUARDS[guard])
    run_sql(url, CHANGES + " INSERT INTO audit (what) VALUES ('since the backup')")
    small = _filenode(url, "small")
    restore_backup(path, database_url=url)
    if guard == "row security":
        run_sql(url, "ALTER TABLE small DISABLE ROW LEVEL SECURITY")  # the oracle reads as a superuser anyway
    assert_same(before, snapshot(url))
    assert _filenode(url, "small") != small  # TRUNCATE


@pytest.mark.parametrize("isolation", ["read committed", "repeatable read"])
def test_a_row_committed_while_the_restore_waits_for_its_lock_is_removed(db, isolation):
    """A writer holds `tags` when the restore starts; it commits a row while the restore waits for the table's
    lock. That row is data the restore replaces: gone afterwards, whichever isolation level the database defaults
    to (under REPEATABLE READ the transaction's snapshot predates the row, so DELETE would keep it)."""
    url, path, before = db
    name = url.rsplit("/", 1)[1]
    run_sql(db_url("postgres"), f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = '{isolation}'")
    writer = psycopg2.connect(url)
    try:
        with writer.cursor() as cur:
            cur.execute("INSERT INTO tags VALUES (1000, 'written during the restore')")
        outcome: dict = {}
        restoring = threading.Thread(target=lambda: outcome.update(
            result=restore_backup(path, database_url=url, show_diff=False)))
        restoring.start()
        deadline = time.monotonic() + 60
        while not query(url, "SELECT 1 FROM pg_locks WHERE NOT granted AND relation = 'tags'::regclass"):
            assert time.monotonic() < deadline and restoring.is_alive(), "the restore never waited for the lock"
            time.sleep(0.05)
        writer.commit()
        restoring.join(120)
        assert "result" in outcome
    finally:
        writer.close()
    assert query(url, "SELECT count(*) FROM tags WHERE id = 1000")[0][0] == 0
    assert_same(before, snapshot(url))


def test_a_role_that_may_truncate_but_not_delete_restores_by_truncate(owner_role, make_db, backup_dir):
    """The restoring role was granted TRUNCATE and INSERT on its table, not DELETE: it restored before the DELETE
    path existed, and still must (by TRUNCATE)."""
    name, url = make_db()
    run_sql(url, "CREATE TABLE tags (id int PRIMARY KEY, label text);"
                 "INSERT INTO tags SELECT i, 'tag ' || i FROM generate_series(1, 20) i;"
                 f'GRANT SELECT, INSERT, TRUNCATE ON tags TO "{owner_role}"')
    before = snapshot(url)
    path = Path(create_backup(backup_dir, database_url=url))
    run_sql(url, "UPDATE tags SET label = 'changed' WHERE id < 5")
    restore_backup(path, database_url=db_url(name, owner_role))
    assert_same(before, snapshot(url))
