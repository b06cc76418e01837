"""Issue 2 acceptance: the torture schema (tests/torture_schema.sql) survives backup and restore exactly.

Fidelity is judged by the independent oracle (tests/oracle.py: per table count + md5 of sorted row::text FROM ONLY,
every sequence's state), never by this package's own reader. Two round trips: (a) back into the same database
after many changes, (b) into a fresh database that has only the schema.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import psycopg2
import pytest

from backup_tasks.core import calculate_diff, create_backup, restore_backup
from backup_tasks.errors import UsageError
from tests.conftest import query, run_sql
from tests.oracle import assert_same, snapshot

SQL_FILE = Path(__file__).with_name("torture_schema.sql")


def torture_sections() -> tuple[str, str]:
    """(schema DDL, data) of the torture schema, split on the `-- @@ data` marker line."""
    text = SQL_FILE.read_text(encoding="utf-8")
    schema, marker, data = text.partition("\n-- @@ data\n")
    assert marker, "torture_schema.sql lost its `-- @@ data` marker"
    return schema, data


# Every data table of the torture schema, by the key the file gives it: public tables bare (unless the name holds
# a dot), every other table schema.table with each part double-quoted unless plain lower case.
EXPECTED_KEYS = {
    '"Other Schema"."Mixed Case ""Quoted"".Table"', '"Other Schema".refs_public', 'a.b', 'public."a.b"',
    '"we""ird.Schema"."tab.le"', "UserAccounts", "aa_child", "all_types", "animals", "audit_log", "cache_entries",
    "cyc_a", "cyc_b", "dogs", "dropped_col", "dupes", "employees", "empty_one", "gen_stored", "ident_always",
    "legacy_rows",
    "ident_default", "meas_notes", "measurements_2023", "measurements_2024_low", "measurements_2024_rest",
    "measurements_default", "nd_a", "nd_b", "secrets", "sensors", "trig_target", "users", "zero", "zz_parent",
}

JSON_WITH_DUPLICATES = '{"a":1,  "a" : 2 ,"b":[1, 2]}'
JSON_WITH_WHITESPACE = '{\n\t"k" :\r\n "v"\n}'

CHANGES = r"""
DELETE FROM all_types WHERE id % 3 = 0;
UPDATE all_types SET tx = 'changed', j = '{}', arr_i = '{9}', f8 = 1, iv = '1 day' WHERE id % 3 = 1;
INSERT INTO all_types (label, num) VALUES ('new row', 1);
UPDATE "Other Schema"."Mixed Case ""Quoted"".Table" SET "col with space" = 'changed';
DELETE FROM "we""ird.Schema"."tab.le";
INSERT INTO "a.b" VALUES ('new public');
DELETE FROM a.b;
DELETE FROM dupes WHERE ctid = (SELECT min(ctid) FROM dupes WHERE x = 1);
INSERT INTO zero DEFAULT VALUES;
INSERT INTO empty_one VALUES (1, 'not empty any more');
DELETE FROM legacy_rows WHERE id = 2;
INSERT INTO dropped_col VALUES (5, 5);
DELETE FROM aa_child WHERE parent_id > 40;
DELETE FROM zz_parent WHERE id > 40;
UPDATE aa_child SET parent_id = 1;
UPDATE cyc_b SET a_id = NULL WHERE id = 30;
DELETE FROM cyc_a WHERE id = 3;
UPDATE nd_a SET b_id = NULL;
DELETE FROM nd_b WHERE id = 20;
UPDATE employees SET manager_id = NULL WHERE id = 5;
INSERT INTO employees (id, manager_id, name) VALUES (200, 100, 'new hire');
UPDATE "UserAccounts" SET "eMail" = 'ALICE@example.org' WHERE "ID" = 1;
DELETE FROM "Other Schema".refs_public WHERE id = 3;
INSERT INTO trig_target (id, v) VALUES (100, 'fires both triggers');
UPDATE trig_target SET v = 'updated' WHERE id < 5;
UPDATE measurements SET day = day + 400 WHERE id % 10 = 5 AND val < 250;  -- moved rows: BEFORE INSERT fires again
INSERT INTO measurements VALUES (1000, '2030-01-01', 2, 1);
DELETE FROM meas_notes WHERE id = 3;
DELETE FROM dogs WHERE id = 4;
INSERT INTO animals VALUES (9, 'new');
DELETE FROM animals WHERE id = 2 AND ctid = (SELECT min(ctid) FROM ONLY animals WHERE id = 2);
INSERT INTO ident_always (v) VALUES ('x'), ('y');
INSERT INTO ident_default (v) VALUES ('z');
UPDATE gen_stored SET a = a + 100;
INSERT INTO users (name) SELECT 'more ' || i FROM generate_series(1, 20) i;
SELECT setval('seq_not_called', 500, true);
SELECT nextval('"Other Schema"."Seq Called"');
SELECT nextval('seq_desc');
SELECT nextval('seq_unused');
DELETE FROM cache_entries WHERE k = 'k1';
UPDATE secrets SET s = 'changed';
UPDATE alembic_version SET version_num = 'ffff0000';
"""


@pytest.fixture
def torture_db(make_db) -> str:
    _, url = make_db()
    schema, data = torture_sections()
    run_sql(url, schema)
    run_sql(url, data)
    return url


def _structure(url: str) -> dict:
    """Constraints and trigger modes: a restore must put back every FK (validated) and every trigger's mode."""
    fks = query(url, "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated "
                      "FROM pg_constraint WHERE contype IN ('f', 'c') AND conrelid <> 0 ORDER BY 1, 2")
    triggers = query(url, "SELECT tgrelid::regclass::text, tgname, tgenabled FROM pg_trigger "
                           "WHERE NOT tgisinternal ORDER BY 1, 2")
    return {"fks": fks, "triggers": triggers}


def _check_application_after_restore(url: str) -> None:
    """What the application sees after a restore, beyond the oracle."""
    # Triggers did not fire during the load: no extra audit rows, no row rewritten twice.
    assert query(url, "SELECT count(*) FROM audit_log") == [(21,)]
    assert query(url, "SELECT max(touched), min(v) FROM trig_target") == [(1, "ROW 1!")]
    assert query(url, "SELECT name FROM employees WHERE id = 100") == [("boss (via trigger)",)]
    assert query(url, "SELECT sum(val) FROM measurements") == [(sum(i * 1.5 * 2 for i in range(1, 301)),)]
    # Stored generated column: recomputed from its expression (it is not in the file).
    assert query(url, "SELECT count(*), count(*) FILTER (WHERE total = a * 10 + b) FROM gen_stored") == [(10, 10)]
    # JSON text is kept byte for byte (duplicate keys, whitespace).
    assert query(url, "SELECT j::text FROM all_types WHERE label = 'bytes'") == [(JSON_WITH_DUPLICATES,)]
    assert query(url, "SELECT j::text FROM all_types WHERE label = 'json newline'") == [(JSON_WITH_WHITESPACE,)]
    # NULL and '' stay distinct.
    assert query(url, "SELECT count(*) FILTER (WHERE tx = ''), count(*) FILTER (WHERE tx IS NULL) "
                       "FROM all_types WHERE label IN ('strings 3', 'all null')") == [(1, 1)]

    # The application's next INSERTs do not collide, and triggers are live again.
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO users (name) VALUES ('after restore') RETURNING id, big")
            new_id, big = cur.fetchone()
            assert new_id == 101 and big == 101
            cur.execute("INSERT INTO ident_always (v) VALUES ('after') RETURNING id")
            assert cur.fetchone()[0] == 11
            cur.execute("INSERT INTO ident_default (v) VALUES ('after') RETURNING id")
            assert cur.fetchone()[0] == 110
            cur.execute("INSERT INTO gen_stored (a, b) VALUES (1, 1) RETURNING id, total")
            assert cur.fetchone() == (11, 11)
            cur.execute("SELECT nextval('seq_not_called'), nextval('\"Other Schema\".\"Seq Called\"'), "
                        "nextval('seq_desc'), nextval('seq_unused')")
            assert cur.fetchone() == (42, 1001, -7, 77)
            cur.execute("INSERT INTO trig_target (id, v) VALUES (500, 'live') RETURNING v")
            assert cur.fetchone()[0] == "LIVE!"
            cur.execute("SELECT count(*) FROM audit_log WHERE row_id = 500")
            assert cur.fetchone()[0] == 1
            # Foreign keys are enforced again.
            cur.execute("SAVEPOINT s")
            with pytest.raises(psycopg2.errors.ForeignKeyViolation):
                cur.execute("INSERT INTO aa_child VALUES (9999, 9999)")
            cur.execute("ROLLBACK TO SAVEPOINT s")
    finally:
        conn.rollback()
        conn.close()


def test_backup_file_is_one_plain_json_document(torture_db, backup_dir):
    path = create_backup(backup_dir, database_url=torture_db)
    with gzip.open(path) as f:
        doc = json.load(f)

    assert set(doc) == {"metadata", "tables"}
    meta = doc["metadata"]
    assert meta["migration_version"] == "abc123def456"
    assert {"timestamp", "database_name", "database_host"} <= set(meta)
    tables = doc["tables"]
    # Partitioned parents, views, materialized views and alembic_version are not data tables.
    assert set(tables) == EXPECTED_KEYS
    expected_counts = {k: v[0] for k, v in snapshot(torture_db)["tables"].items()}
    for key, table in tables.items():
        assert set(table) >= {"row_count", "columns", "data"}
        assert table["row_count"] == len(table["data"])
        oracle_key = f"{table['schema']}.{table['name']}"
        assert table["row_count"] == expected_counts[oracle_key], key
    assert tables["zero"] == {**tables["zero"], "columns": [], "data": [[], [], []], "row_count": 3}
    assert tables["empty_one"]["data"] == [] and tables["empty_one"]["row_count"] == 0
    assert tables["gen_stored"]["columns"] == ["id", "a", "b"]  # generated column is recomputed, never stored
    assert tables["dropped_col"]["columns"] == ["a", "c"]
    assert tables['public."a.b"']["data"] == [["public dotted"], ["second"]]
    assert tables["a.b"]["data"] == [["schema a table b", 1]]

    # JSON-native values where exact, PostgreSQL's text form elsewhere; json text untouched.
    cols = tables["all_types"]["columns"]
    rows = {r[cols.index("label")]: dict(zip(cols, r)) for r in tables["all_types"]["data"]}
    assert rows["numbers max"]["i8"] == 9223372036854775807 and rows["numbers max"]["b"] is True
    assert rows["numbers min"]["i8"] == -9223372036854775808
    assert rows["nan"]["num"] == "NaN" and rows["nan"]["f8"] == "NaN"
    assert rows["bytes"]["j"] == JSON_WITH_DUPLICATES
    assert rows["json newline"]["j"] == JSON_WITH_WHITESPACE
    assert rows["array bounds"]["arr_i"] == "[0:2]={1,2,3}"
    assert rows["strings 2"]["tx"] == "\\N" and rows["strings 3"]["tx"] == "" and rows["all null"]["tx"] is None


def test_roundtrip_into_same_database_after_changes(torture_db, backup_dir):
    url = torture_db
    before = snapshot(url)
    structure = _structure(url)
    path = create_backup(backup_dir, database_url=url)
    assert snapshot(url) == before  # a backup changes nothing

    run_sql(url, CHANGES)
    changed = snapshot(url)
    assert changed != before
    differing = {k for k in before["tables"] if before["tables"][k] != changed["tables"][k]}
    assert len(differing) >= 25, differing  # the changes touch most tables (the check below means something)

    result = restore_backup(Path(path), database_url=url)
    assert result.success
    assert result.migration_version_before == "ffff0000"
    assert result.migration_version_after == "abc123def456"
    assert_same(before, snapshot(url))
    assert _structure(url) == structure
    _check_application_after_restore(url)


def test_roundtrip_into_fresh_database_with_same_schema(torture_db, make_db, backup_dir):
    before = snapshot(torture_db)
    structure = _structure(torture_db)
    path = create_backup(backup_dir, database_url=torture_db)

    _, fresh = make_db()
    schema, _ = torture_sections()
    run_sql(fresh, schema)
    empty = snapshot(fresh)
    assert empty["tables"].keys() == before["tables"].keys()
    assert empty != before

    result = restore_backup(Path(path), database_url=fresh)
    assert result.success
    assert result.migration_version_before is None
    assert result.migration_version_after == "abc123def456"
    assert_same(before, snapshot(fresh))
    assert _structure(fresh) == structure
    _check_application_after_restore(fresh)

    # And the restored database backs up to the same content again.
    again = create_backup(backup_dir, database_url=fresh)
    with gzip.open(path) as f1, gzip.open(again) as f2:
        first, second = json.load(f1), json.load(f2)
    assert first["tables"] == second["tables"]


def test_detailed_diff_and_dry_run_on_the_torture_schema(torture_db, backup_dir):
    """Every PK table compares equal to its own backup (the diff's row comparison is exact for every type), and
    after the changes the counts of the most-changed table are exactly what was done to it."""
    url = torture_db
    path = create_backup(backup_dir, database_url=url)
    diff = calculate_diff(Path(path), database_url=url, detailed=True)
    assert set(diff.tables) == EXPECTED_KEYS
    for key, t in diff.tables.items():
        assert t.diff == 0 and t.current_rows == t.backup_rows, key
        if t.has_primary_key:
            assert (t.to_insert, t.to_delete, t.to_change) == (0, 0, 0), key
        else:
            assert t.to_insert is None, key
    assert diff.tables["dupes"].has_primary_key is False

    (total, div0, div1), = query(url, "SELECT count(*), count(*) FILTER (WHERE id % 3 = 0), "
                                       "count(*) FILTER (WHERE id % 3 = 1) FROM all_types")
    run_sql(url, CHANGES)
    changed = snapshot(url)
    result = restore_backup(Path(path), database_url=url, dry_run=True)
    assert result.dry_run
    t = result.diff.tables["all_types"]
    assert (t.current_rows, t.backup_rows) == (total - div0 + 1, total)
    assert (t.to_insert, t.to_delete, t.to_change) == (div0, 1, div1)
    t = result.diff.tables["trig_target"]
    assert (t.to_insert, t.to_delete, t.to_change) == (0, 1, 4)
    assert snapshot(url) == changed


def test_partial_restore_across_partitions(torture_db, backup_dir):
    url = torture_db
    before = snapshot(url)
    structure = _structure(url)
    path = create_backup(backup_dir, database_url=url)
    run_sql(url, """
        DELETE FROM meas_notes;
        UPDATE measurements SET val = -1 WHERE day < '2024-01-01';
        DELETE FROM measurements WHERE id > 250;
        UPDATE sensors SET name = 'renamed';
    """)
    changed = snapshot(url)
    leaves = ["measurements_2023", "measurements_2024_low", "measurements_2024_rest", "measurements_default"]

    # meas_notes references the partitioned parent: restoring a leaf alone would break it.
    for selection in (["measurements_2023"], ["sensors", "measurements_2023", "meas_notes"], ["sensors"]):
        with pytest.raises(UsageError) as err:
            restore_backup(Path(path), database_url=url, tables=selection)
        assert "references" in str(err.value)
        assert snapshot(url) == changed

    # A leaf together with the table referencing its parent: the leaf's FK to sensors is re-validated.
    restore_backup(Path(path), database_url=url, tables=["measurements_2023", "meas_notes"])
    after = snapshot(url)
    for key in ("public.measurements_2023", "public.meas_notes"):
        assert after["tables"][key] == before["tables"][key]
    for key in ("public.measurements_default", "public.sensors"):
        assert after["tables"][key] == changed["tables"][key]

    # sensors with every leaf of the partitioned table that references it.
    restore_backup(Path(path), database_url=url, tables=["sensors", "meas_notes", *leaves])
    after = snapshot(url)
    for key in ("public.sensors", "public.meas_notes", *(f"public.{leaf}" for leaf in leaves)):
        assert after["tables"][key] == before["tables"][key]
    assert _structure(url) == structure  # every FK dropped for the load is back, validated
    restore_backup(Path(path), database_url=url)
    assert_same(before, snapshot(url))


def test_torture_roundtrip_as_non_superuser_owner(owner_role, make_db, backup_dir):
    """The whole torture schema created, backed up and restored by the database owner, who is no superuser
    (hstore and citext are trusted extensions). A table with FORCE ROW LEVEL SECURITY cannot be read whole by
    its owner: the backup refuses with a clear message instead of saving a filtered table."""
    from backup_tasks.errors import DatabaseError
    from tests.conftest import db_url

    name, _ = make_db(owner=owner_role)
    url = db_url(name, owner_role)
    schema, data = torture_sections()
    run_sql(url, schema)
    assert query(url, "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user") == [(False, False)]
    run_sql(url, "ALTER TABLE secrets NO FORCE ROW LEVEL SECURITY")
    run_sql(url, data)
    run_sql(url, "ALTER TABLE secrets FORCE ROW LEVEL SECURITY")
    with pytest.raises(DatabaseError) as err:
        create_backup(backup_dir, database_url=url)
    assert "row-level security" in str(err.value) and "secrets" in str(err.value)
    assert "BYPASSRLS" in err.value.hint
    assert list(backup_dir.iterdir()) == []  # nothing that looks like a backup was left
    run_sql(url, "ALTER TABLE secrets NO FORCE ROW LEVEL SECURITY")

    before = snapshot(url)
    structure = _structure(url)
    path = create_backup(backup_dir, database_url=url)
    run_sql(url, CHANGES)
    result = restore_backup(Path(path), database_url=url)
    assert result.migration_version_after == "abc123def456"
    assert_same(before, snapshot(url))
    assert _structure(url) == structure
    _check_application_after_restore(url)

    fresh_name, _ = make_db(owner=owner_role)
    fresh = db_url(fresh_name, owner_role)
    run_sql(fresh, schema)
    run_sql(fresh, "ALTER TABLE secrets NO FORCE ROW LEVEL SECURITY")
    restore_backup(Path(path), database_url=fresh)
    assert_same(before, snapshot(fresh))
    _check_application_after_restore(fresh)

    # Restoring into a table with FORCE ROW LEVEL SECURITY is beyond the owner too: refused, nothing changed.
    run_sql(fresh, "ALTER TABLE secrets FORCE ROW LEVEL SECURITY")
    run_sql(fresh, CHANGES)
    changed = snapshot(fresh)
    for show_diff in (True, False):
        with pytest.raises(DatabaseError) as err:
            restore_backup(Path(path), database_url=fresh, show_diff=show_diff)
        assert "row-level security" in str(err.value) and "BYPASSRLS" in err.value.hint
        assert snapshot(fresh) == changed


def test_reformatted_file_restores_identically(torture_db, make_db, backup_dir, tmp_path):
    """Any JSON document of the same shape loads the same: here the backup re-serialised by Python's json module
    with indentation, ensure_ascii escapes and `row_count` before `data` (the seed's order)."""
    before = snapshot(torture_db)
    path = create_backup(backup_dir, database_url=torture_db)
    with gzip.open(path) as f:
        doc = json.load(f)
    doc["tables"] = {k: {"row_count": t["row_count"], **{f: v for f, v in t.items() if f != "row_count"}}
                     for k, t in reversed(list(doc["tables"].items()))}
    other = tmp_path / "backup_20240101_000000.backup.gz"
    other.write_bytes(gzip.compress(json.dumps(doc, indent=2, ensure_ascii=True).encode()))

    _, fresh = make_db()
    schema, _ = torture_sections()
    run_sql(fresh, schema)
    restore_backup(other, database_url=fresh)
    assert_same(before, snapshot(fresh))


def test_seed_shaped_file_without_additive_metadata_restores(torture_db, make_db, backup_dir, tmp_path):
    """A file with only the seed's fields (what another implementation of the seed writes): no table of
    contents, no column types, no schema/name fields, no sequence states."""
    before = snapshot(torture_db)
    path = create_backup(backup_dir, database_url=torture_db)
    with gzip.open(path) as f:
        doc = json.load(f)
    seed_meta = {k: doc["metadata"][k] for k in ("timestamp", "migration_version", "database_name", "database_host")}
    seed_tables = {k: {"row_count": t["row_count"], "columns": t["columns"], "data": t["data"]}
                   for k, t in doc["tables"].items()}
    other = tmp_path / "backup_20240101_000000.backup.gz"
    other.write_bytes(gzip.compress(json.dumps({"metadata": seed_meta, "tables": seed_tables}).encode()))

    _, fresh = make_db()
    schema, _ = torture_sections()
    run_sql(fresh, schema)
    result = restore_backup(other, database_url=fresh)
    assert result.migration_version_after == "abc123def456"
    after = snapshot(fresh)
    assert after["tables"] == before["tables"]
    # Without recorded sequence states, the application's next INSERTs must still not collide.
    conn = psycopg2.connect(fresh)
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO users (name) VALUES ('after restore') RETURNING id")
            assert cur.fetchone()[0] > 90
            cur.execute("INSERT INTO ident_always (v) VALUES ('after') RETURNING id")
            assert cur.fetchone()[0] > 9
            cur.execute("INSERT INTO audit_log (tbl) VALUES ('x') RETURNING id")
            assert cur.fetchone()[0] > 21
    finally:
        conn.rollback()
        conn.close()


HOSTILE_SETTINGS = {
    # Each changes how values are printed or parsed; the engine pins its own session, like pg_dump.
    "DateStyle": "SQL, DMY", "IntervalStyle": "sql_standard", "TimeZone": "Pacific/Chatham",
    "extra_float_digits": "0", "bytea_output": "escape", "xmloption": "document", "array_nulls": "off",
    "search_path": '"Other Schema", a', "standard_conforming_strings": "off", "statement_timeout": "5s",
    "default_transaction_isolation": "serializable",
}


def test_roundtrip_between_databases_with_hostile_settings(torture_db, make_db, backup_dir):
    """Database-level settings (ALTER DATABASE … SET) on both sides do not change what is backed up or restored."""
    before = snapshot(torture_db)
    source = torture_db.rsplit("/", 1)[1]
    _, fresh = make_db()
    schema, _ = torture_sections()
    run_sql(fresh, schema)
    target = fresh.rsplit("/", 1)[1]
    for db in (source, target):
        run_sql(torture_db, "; ".join(f'ALTER DATABASE "{db}" SET {k} = \'{v}\'' if k != "search_path"
                                      else f'ALTER DATABASE "{db}" SET {k} = {v}'
                                      for k, v in HOSTILE_SETTINGS.items()))

    path = create_backup(backup_dir, database_url=torture_db)
    restore_backup(Path(path), database_url=fresh)
    for db in (source, target):
        run_sql(torture_db, f'ALTER DATABASE "{db}" RESET ALL')
    assert_same(before, snapshot(fresh))
    assert snapshot(torture_db) == before
