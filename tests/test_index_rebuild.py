"""A restore drops a big table's indexes before its load and builds them afterwards (pg/restore_ops.py).

What must hold: every index and key constraint comes back with the same definition, name and properties; the
ones that cannot be rebuilt safely are left in place (same oid); uniqueness and exclusion are still enforced
over the loaded rows (a file with a duplicate key is refused and nothing changes); the data is oracle-equal.
rebuild_indexes_min_rows=0 (EngineOptions) makes every table "big", so these small tables take the rebuild path.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import psycopg2
import pytest

from backup_tasks.core import create_backup, restore_backup
from backup_tasks.core.options import EngineOptions
from backup_tasks.errors import RestoreError
from tests.conftest import query, run_sql
from tests.oracle import assert_same, snapshot
from tests.test_torture_roundtrip import CHANGES, _structure, torture_sections

SCHEMA = r"""
CREATE TABLE parent (
    id int PRIMARY KEY WITH (fillfactor = 70),
    code text NOT NULL,
    during tstzrange,
    email text,
    doc jsonb,
    CONSTRAINT parent_code_key UNIQUE (code),
    CONSTRAINT deferred_pair UNIQUE (id, code) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT no_overlap EXCLUDE USING gist (during WITH &&),
    CONSTRAINT email_once UNIQUE NULLS NOT DISTINCT (email)
);
CREATE UNIQUE INDEX parent_lower_code ON parent (lower(code)) WHERE id > 0;
CREATE INDEX parent_doc ON parent USING gin (doc jsonb_path_ops);
CREATE INDEX parent_hash ON parent USING hash (code);
CREATE INDEX parent_brin ON parent USING brin (id) WITH (pages_per_range = 16);
CREATE INDEX parent_incl ON parent (id) INCLUDE (code);
CREATE INDEX parent_clustered ON parent (code, id);
CLUSTER parent USING parent_clustered;
CREATE UNIQUE INDEX parent_replident ON parent (id, code);
ALTER TABLE parent REPLICA IDENTITY USING INDEX parent_replident;
CREATE INDEX parent_commented ON parent (email);
COMMENT ON INDEX parent_commented IS 'kept: a rebuild would lose this comment';
CREATE INDEX parent_stats ON parent ((id * 2));
ALTER INDEX parent_stats ALTER COLUMN 1 SET STATISTICS 500;

CREATE TABLE child (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    parent_id int NOT NULL REFERENCES parent (id),
    parent_code text REFERENCES parent (code) DEFERRABLE,
    note text
);
CREATE INDEX child_parent ON child (parent_id);

CREATE TABLE outsider (id int PRIMARY KEY, parent_id int REFERENCES parent (id));

INSERT INTO parent
SELECT i, 'code-' || i, tstzrange(timestamptz '2024-01-01' + i * interval '1 hour',
                                  timestamptz '2024-01-01' + (i + 1) * interval '1 hour'),
       CASE WHEN i = 7 THEN NULL ELSE 'user' || i || '@example.org' END,  -- NULLS NOT DISTINCT: one NULL
       jsonb_build_object('i', i)
FROM generate_series(1, 300) i;
INSERT INTO child (parent_id, parent_code, note) SELECT i % 300 + 1, 'code-' || (i % 300 + 1), 'n' || i
FROM generate_series(1, 900) i;
INSERT INTO outsider SELECT i, i FROM generate_series(1, 50) i;
"""


def _indexes(url: str) -> dict[str, tuple]:
    """Every index of the public tables: definition, flags, constraint definition, comment and oid."""
    rows = query(url, """
        SELECT ic.relname, pg_get_indexdef(i.indexrelid), i.indisunique, i.indisprimary, i.indisclustered,
               i.indisreplident, i.indisvalid, con.conname, pg_get_constraintdef(con.oid), con.condeferrable,
               con.condeferred, obj_description(i.indexrelid, 'pg_class'), ic.oid,
               (SELECT array_agg(attstattarget ORDER BY attnum) FROM pg_attribute WHERE attrelid = i.indexrelid)
        FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.contype IN ('p', 'u', 'x')
        WHERE n.nspname = 'public' ORDER BY 1""")
    return {r[0]: r[1:] for r in rows}


def _without_oid(indexes: dict[str, tuple]) -> dict[str, tuple]:
    return {name: row[:11] + row[12:] for name, row in indexes.items()}


# Kept: what a rebuild would lose (clustered mark, replica identity, comment, statistics target, the primary key's
# fillfactor, which its constraint definition does not carry).
KEPT = {"parent_clustered", "parent_replident", "parent_commented", "parent_stats", "parent_pkey"}


@pytest.fixture
def indexed_db(make_db) -> str:
    _, url = make_db()
    run_sql(url, SCHEMA)
    return url


# Every table "big": the rebuild path for these small tables. test_default_threshold_* runs with the defaults.
EVERY_TABLE = EngineOptions(rebuild_indexes_min_rows=0)


def test_indexes_and_key_constraints_come_back_identical(indexed_db, backup_dir):
    url = indexed_db
    before, indexes = snapshot(url), _indexes(url)
    assert len(indexes) == 17
    path = create_backup(backup_dir, database_url=url)
    run_sql(url, "DELETE FROM child WHERE id % 2 = 0; UPDATE parent SET doc = '{}' WHERE id < 100; "
                 "DELETE FROM outsider; INSERT INTO outsider VALUES (99, NULL);")

    assert restore_backup(Path(path), database_url=url, options=EVERY_TABLE).success

    assert_same(before, snapshot(url))
    after = _indexes(url)
    assert _without_oid(after) == _without_oid(indexes)
    rebuilt = {name for name in indexes if after[name][11] != indexes[name][11]}
    # outsider is restored too (a full restore): its primary key is rebuilt as well.
    assert rebuilt == set(indexes) - KEPT, rebuilt
    # The rebuilt constraints still hold.
    with pytest.raises(psycopg2.errors.UniqueViolation):
        run_sql(url, "INSERT INTO parent (id, code, email) VALUES (1, 'another', 'a@b')")
    with pytest.raises(psycopg2.errors.ExclusionViolation):
        run_sql(url, "INSERT INTO parent (id, code, email, during) SELECT 1000, 'c', 'c@d', during FROM parent "
                     "WHERE id = 5")
    with pytest.raises(psycopg2.errors.ForeignKeyViolation):
        run_sql(url, "INSERT INTO outsider VALUES (1000, 100000)")


def test_partial_restore_rebuilds_only_the_selected_tables_indexes(indexed_db, backup_dir):
    url = indexed_db
    original = snapshot(url)
    path = create_backup(backup_dir, database_url=url)
    run_sql(url, "DELETE FROM child WHERE id > 450;"
                 "UPDATE parent SET doc = jsonb_build_object('changed', true) WHERE id = 300")
    before, indexes = snapshot(url), _indexes(url)

    # child references parent, which is not restored
    restore_backup(Path(path), database_url=url, options=EVERY_TABLE, tables=["child"])

    after = _indexes(url)
    assert _without_oid(after) == _without_oid(indexes)
    assert {name for name in indexes if after[name][11] != indexes[name][11]} == {"child_pkey", "child_parent"}
    now = snapshot(url)
    assert now["tables"]["public.child"] == original["tables"]["public.child"] != before["tables"]["public.child"]
    assert {k: v for k, v in now["tables"].items() if k != "public.child"} == {
        k: v for k, v in before["tables"].items() if k != "public.child"}  # parent keeps its change


def test_duplicate_key_in_file_is_refused_and_nothing_changes(indexed_db, backup_dir, tmp_path):
    url = indexed_db
    path = Path(create_backup(backup_dir, database_url=url))
    text = gzip.decompress(path.read_bytes())
    # The first table in the file (child) gets a second row with id 1.
    assert b"\n[2," in text
    bad = tmp_path / "backup_20240101_000000.backup.gz"
    bad.write_bytes(gzip.compress(text.replace(b"\n[2,", b"\n[1,", 1)))
    before, indexes = snapshot(url), _indexes(url)

    with pytest.raises(RestoreError) as info:
        restore_backup(bad, database_url=url, options=EVERY_TABLE)

    assert "rolled back" in str(info.value) and 'unique index "child_pkey"' in str(info.value)
    assert "Key (id)=(1) is duplicated" in str(info.value)
    assert_same(before, snapshot(url))
    assert _indexes(url) == indexes  # same oids: the drops were rolled back too


def test_torture_schema_with_every_table_rebuilt(make_db, backup_dir):
    _, url = make_db()
    schema, data = torture_sections()
    run_sql(url, schema)
    run_sql(url, data)
    before, structure = snapshot(url), _structure(url)
    index_defs = query(url, "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index i "
                             "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                             "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1")
    path = create_backup(backup_dir, database_url=url)
    run_sql(url, CHANGES)

    assert restore_backup(Path(path), database_url=url, options=EVERY_TABLE).success

    assert_same(before, snapshot(url))
    assert _structure(url) == structure
    assert query(url, "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index i "
                       "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
                       "ORDER BY 1") == index_defs


def test_default_threshold_rebuilds_big_tables_only(make_db, backup_dir):
    """With the default setting, a table of more rows than the threshold is rebuilt, a small one is not, and a
    table of few but large rows counts as big by its bytes. (The file's table list has no row counts: the
    restore reads each table's first blocks before deciding; a first version decided from that list and
    silently never rebuilt anything.)"""
    _, url = make_db()
    run_sql(url, """
        CREATE TABLE big (id int PRIMARY KEY, v text);
        INSERT INTO big SELECT i, 'v' || i FROM generate_series(1, 12000) i;
        CREATE TABLE small (id int PRIMARY KEY, v text);
        INSERT INTO small SELECT i, 'v' || i FROM generate_series(1, 100) i;
        CREATE TABLE wide (id int PRIMARY KEY, v text);
        ALTER TABLE wide ALTER COLUMN v SET STORAGE EXTERNAL;
        INSERT INTO wide SELECT i, repeat(md5(i::text), 2000) FROM generate_series(1, 100) i;
    """)
    before = snapshot(url)
    oids = dict(query(url, "SELECT indrelid::regclass::text, indexrelid FROM pg_index "
                           "WHERE indrelid::regclass::text IN ('big', 'small', 'wide')"))
    path = create_backup(backup_dir, database_url=url)
    assert restore_backup(Path(path), database_url=url).success
    after = dict(query(url, "SELECT indrelid::regclass::text, indexrelid FROM pg_index "
                            "WHERE indrelid::regclass::text IN ('big', 'small', 'wide')"))
    assert after["small"] == oids["small"]
    assert after["big"] != oids["big"] and after["wide"] != oids["wide"]
    assert_same(before, snapshot(url))
