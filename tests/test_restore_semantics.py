"""Issue 2 restore semantics, on the real PostgreSQL, judged by the independent oracle (tests/oracle.py).

Tables not in the backup are emptied, the detailed diff counts rows exactly, a dry run changes nothing, `tables=`
restores a subset and refuses to break foreign keys, schema mismatches and corrupt files are refused before
anything changes, a non-superuser owner can restore, and the migration version follows the backup.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import psycopg2
import pytest

from backup_tasks.core import calculate_diff, create_backup, restore_backup
from backup_tasks.errors import InvalidBackupError, RestoreError, SchemaMismatchError, UsageError
from tests.conftest import db_url, query, run_sql
from tests.oracle import assert_same, snapshot

SCHEMA = """
CREATE SCHEMA crm;
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text);
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers (id), total numeric(10, 2),
                     placed timestamptz);
CREATE TABLE order_items (order_id int REFERENCES orders (id), line int, sku text, qty int,
                          PRIMARY KEY (order_id, line));
CREATE TABLE notes (body text);
CREATE TABLE crm."Contact Log" (id int PRIMARY KEY, customer_id int REFERENCES customers (id), msg text);
CREATE TABLE tags (id serial PRIMARY KEY, label text);
CREATE TABLE alembic_version (version_num varchar(32) NOT NULL PRIMARY KEY);
"""

DATA = """
INSERT INTO customers (name, email)
    SELECT 'customer ' || i, CASE WHEN i % 7 = 0 THEN NULL ELSE 'c' || i || '@example.com' END
    FROM generate_series(1, 120) i;
INSERT INTO orders (customer_id, total, placed)
    SELECT 1 + i % 100, i * 1.25, timestamptz '2024-01-01 00:00+00' + i * interval '1 hour'
    FROM generate_series(1, 300) i;
INSERT INTO order_items SELECT o, l, 'sku-' || o || '-' || l, CASE WHEN o % 5 = 0 THEN NULL ELSE l END
    FROM generate_series(1, 300) o, generate_series(1, 2) l;
INSERT INTO notes SELECT 'note ' || (i % 15) FROM generate_series(1, 20) i;
INSERT INTO crm."Contact Log" SELECT i, 1 + i % 100, 'called ' || i FROM generate_series(1, 50) i;
INSERT INTO tags (label) SELECT 'tag ' || i FROM generate_series(1, 10) i;
INSERT INTO alembic_version VALUES ('v1');
"""


@pytest.fixture
def shop(make_db) -> str:
    _, url = make_db()
    run_sql(url, SCHEMA + DATA)
    return url


def _one(url: str, statement: str):
    return query(url, statement)[0]


def _without(snap: dict, *keys: str) -> dict:
    return {**snap, "tables": {k: v for k, v in snap["tables"].items() if k not in keys}}


# -- tables not in the backup ------------------------------------------------------------------------------------

def test_table_not_in_backup_is_emptied_and_diff_shows_n_to_0(shop, backup_dir):
    path = create_backup(backup_dir, database_url=shop)
    before = snapshot(shop)
    run_sql(shop, """
        CREATE TABLE extra (id int PRIMARY KEY, customer_id int REFERENCES customers (id), v text);
        INSERT INTO extra SELECT i, i, 'x' FROM generate_series(1, 7) i;
        CREATE TABLE crm.extra_log (v text);
        INSERT INTO crm.extra_log VALUES ('a'), ('b');
        DELETE FROM notes;
    """)

    diff = calculate_diff(Path(path), database_url=shop)
    extra = diff.tables["extra"]
    assert (extra.current_rows, extra.backup_rows, extra.diff, extra.in_backup) == (7, 0, -7, False)
    assert (extra.to_insert, extra.to_delete, extra.to_change) == (0, 7, 0)
    log = diff.tables["crm.extra_log"]
    assert (log.current_rows, log.backup_rows, log.diff, log.in_backup) == (2, 0, -2, False)
    assert diff.tables["notes"].current_rows == 0 and diff.tables["notes"].backup_rows == 20
    assert diff.total_current_rows == diff.total_backup_rows - 20 + 9

    result = restore_backup(Path(path), database_url=shop)
    assert result.diff.tables["extra"].current_rows == 7 and result.diff.tables["extra"].backup_rows == 0
    assert {"extra", "crm.extra_log"} <= set(result.truncated)
    after = snapshot(shop)
    assert after["tables"]["public.extra"][0] == 0 and after["tables"]["crm.extra_log"][0] == 0
    assert_same(before, _without(after, "public.extra", "crm.extra_log"))
    # The emptied table's foreign key is back.
    assert _one(shop, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'extra'::regclass AND contype = 'f'") == (1,)


# -- detailed diff and dry run -------------------------------------------------------------------------------------

CHANGES = """
DELETE FROM order_items WHERE order_id IN (1, 2, 3);                     -- 6 rows gone: to_insert 6
UPDATE order_items SET qty = 99 WHERE order_id = 4;                      -- 2 changed
UPDATE order_items SET qty = NULL WHERE order_id = 5;                    -- NULL -> NULL: not a change
INSERT INTO order_items VALUES (6, 3, 'new', 1);                         -- 1 to delete
DELETE FROM customers WHERE id BETWEEN 111 AND 115;                      -- 5 to insert
INSERT INTO customers (name) VALUES ('n1'), ('n2'), ('n3');               -- 3 to delete
UPDATE customers SET name = 'renamed' WHERE id IN (101, 102);            -- 2 changed
UPDATE customers SET email = '' WHERE id = 105;                          -- NULL -> '': changed
UPDATE customers SET email = NULL WHERE id = 106;                        -- text -> NULL: changed
UPDATE customers SET name = name, email = email WHERE id IN (107, 108);  -- rewritten, same values
UPDATE crm."Contact Log" SET id = 1000 WHERE id = 1;                     -- key moved: 1 insert, 1 delete
INSERT INTO notes VALUES ('note 1'), (NULL);                             -- no primary key: counts only
UPDATE alembic_version SET version_num = 'v2';
SELECT setval('tags_id_seq', 500);
"""


def test_detailed_diff_counts_are_exact_and_dry_run_changes_nothing(shop, backup_dir):
    path = create_backup(backup_dir, database_url=shop)
    run_sql(shop, CHANGES)
    changed = snapshot(shop)

    diff = calculate_diff(Path(path), database_url=shop, detailed=True)
    got = {k: (t.current_rows, t.backup_rows, t.diff, t.to_insert, t.to_delete, t.to_change)
           for k, t in diff.tables.items()}
    assert got == {
        "order_items": (595, 600, 5, 6, 1, 2),
        "customers": (118, 120, 2, 5, 3, 4),
        'crm."Contact Log"': (50, 50, 0, 1, 1, 0),
        "orders": (300, 300, 0, 0, 0, 0),
        "tags": (10, 10, 0, 0, 0, 0),
        "notes": (22, 20, -2, None, None, None),
    }
    assert diff.tables["notes"].has_primary_key is False and diff.tables["customers"].has_primary_key is True
    assert (diff.total_current_rows, diff.total_backup_rows, diff.total_diff) == (1095, 1100, 5)
    assert diff.backup_migration_version == "v1" and diff.current_migration_version == "v2"
    assert snapshot(shop) == changed  # computing a diff changes nothing

    result = restore_backup(Path(path), database_url=shop, dry_run=True)
    assert result.dry_run and result.success and result.restored_rows == 0
    assert result.diff.tables["customers"].to_change == 4
    assert result.diff.tables["order_items"].to_insert == 6
    assert snapshot(shop) == changed  # oracle: a dry run changes nothing, sequences included


# -- restoring a subset of tables ----------------------------------------------------------------------------------

def test_restore_selected_tables_only(shop, backup_dir):
    before = snapshot(shop)
    path = create_backup(backup_dir, database_url=shop)
    run_sql(shop, CHANGES)
    changed = snapshot(shop)

    restore_backup(Path(path), database_url=shop, tables=["notes"])
    after = snapshot(shop)
    assert after["tables"]["public.notes"] == before["tables"]["public.notes"]
    assert _without(after, "public.notes") == _without(changed, "public.notes")

    # A parent together with every table that references it, and a child alone (its parents are intact).
    restore_backup(Path(path), database_url=shop,
                   tables=["customers", "orders", "order_items", 'crm."Contact Log"'])
    after = snapshot(shop)
    for key in ("public.customers", "public.orders", "public.order_items", "crm.Contact Log", "public.notes"):
        assert after["tables"][key] == before["tables"][key], key
    assert after["tables"]["public.alembic_version"] == changed["tables"]["public.alembic_version"]
    # Only the restored tables' own sequences were reset.
    assert after["sequences"]["public.customers_id_seq"] == before["sequences"]["public.customers_id_seq"]
    assert after["sequences"]["public.tags_id_seq"] == changed["sequences"]["public.tags_id_seq"] == (500, True)
    assert _one(shop, "INSERT INTO customers (name) VALUES ('next') RETURNING id") == (121,)


def test_restore_selected_tables_refuses_to_break_foreign_keys(shop, backup_dir):
    path = create_backup(backup_dir, database_url=shop)
    run_sql(shop, CHANGES)
    changed = snapshot(shop)

    with pytest.raises(UsageError) as err:
        restore_backup(Path(path), database_url=shop, tables=["customers"])
    message = str(err.value)
    assert "orders" in message and "Contact Log" in message and "customers" in message
    assert snapshot(shop) == changed

    with pytest.raises(UsageError) as err:
        restore_backup(Path(path), database_url=shop, tables=["orders", "customers"])
    assert "order_items" in str(err.value) and "Contact Log" in str(err.value)
    assert snapshot(shop) == changed

    with pytest.raises(UsageError):
        restore_backup(Path(path), database_url=shop, tables=["no_such_table"])
    assert snapshot(shop) == changed


def test_restoring_a_child_whose_parent_rows_are_gone_fails_and_rolls_back(shop, backup_dir):
    path = create_backup(backup_dir, database_url=shop)
    run_sql(shop, "DELETE FROM order_items WHERE order_id = 7; DELETE FROM orders WHERE id = 7;")
    changed = snapshot(shop)
    with pytest.raises(RestoreError) as err:
        restore_backup(Path(path), database_url=shop, tables=["order_items"])
    assert "order_items" in str(err.value)
    assert snapshot(shop) == changed


# -- schema mismatch -------------------------------------------------------------------------------------------------

def test_schema_mismatch_lists_every_problem_and_changes_nothing(shop, backup_dir):
    path = create_backup(backup_dir, database_url=shop)
    run_sql(shop, """
        DROP TABLE tags;
        ALTER TABLE customers DROP COLUMN email;
        ALTER TABLE orders ADD COLUMN coupon text;
        ALTER TABLE order_items ALTER COLUMN qty TYPE bigint;
        DELETE FROM notes WHERE body = 'note 3';
        UPDATE alembic_version SET version_num = 'v3';
    """)
    changed = snapshot(shop)
    for kwargs in ({}, {"show_diff": False}):
        with pytest.raises(SchemaMismatchError) as err:
            restore_backup(Path(path), database_url=shop, **kwargs)
        message = str(err.value)
        assert "'tags'" in message  # missing table
        assert "customers.email" in message  # missing column
        assert "orders.coupon" in message  # extra column
        assert "order_items.qty" in message and "integer" in message and "bigint" in message  # changed type
        assert snapshot(shop) == changed


# -- corrupt files -------------------------------------------------------------------------------------------------

def _variants(path: Path, tmp: Path) -> dict[str, Path]:
    data = path.read_bytes()
    out: dict[str, bytes] = {
        "truncated half": data[: len(data) // 2],
        "truncated tail": data[:-5],
        "empty": b"",
        "not gzip": b"{\"metadata\": {}, \"tables\": {}}",
        "trailing garbage": data + b"garbage",
    }
    for fraction in (0.2, 0.5, 0.8):
        flipped = bytearray(data)
        i = int(len(data) * fraction)
        flipped[i] ^= 0xFF
        flipped[i + 1] ^= 0x5A
        out[f"flipped at {fraction}"] = bytes(flipped)
    crc = bytearray(data)
    crc[-6] ^= 0x01  # the gzip trailer's CRC32
    out["bad crc"] = bytes(crc)
    doc = json.loads(gzip.decompress(data))
    doc["tables"]["orders"]["row_count"] += 1
    out["row_count lies"] = gzip.compress(json.dumps(doc).encode())
    doc = json.loads(gzip.decompress(data))
    doc["tables"]["orders"]["data"][3].append(1)
    out["row too wide"] = gzip.compress(json.dumps(doc).encode())
    out["json cut short"] = gzip.compress(json.dumps(doc).encode()[:-40])
    doc = json.loads(gzip.decompress(data))
    del doc["tables"]["tags"]
    out["table listed in metadata missing"] = gzip.compress(json.dumps(doc).encode())
    doc = json.loads(gzip.decompress(data))
    doc["tables"]["stowaway"] = {"columns": ["a"], "data": [[1]], "row_count": 1}
    out["table not listed in metadata"] = gzip.compress(json.dumps(doc).encode())
    doc = json.loads(gzip.decompress(data))
    doc["tables"]["notes"]["columns"] = ["text"]
    out["columns differ from metadata"] = gzip.compress(json.dumps(doc).encode())
    out["two documents"] = data + data
    paths = {}
    for n, (name, blob) in enumerate(out.items()):
        p = tmp / f"backup_20240101_0000{n:02d}.backup.gz"
        p.write_bytes(blob)
        paths[name] = p
    return paths


def test_corrupt_files_are_refused_and_change_nothing(shop, backup_dir, tmp_path):
    path = Path(create_backup(backup_dir, database_url=shop))
    run_sql(shop, CHANGES)
    changed = snapshot(shop)
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    for name, bad in _variants(path, bad_dir).items():
        for show_diff in (True, False):
            with pytest.raises(InvalidBackupError):
                restore_backup(bad, database_url=shop, show_diff=show_diff)
            assert snapshot(shop) == changed, (name, show_diff)
    # The intact file still restores.
    restore_backup(path, database_url=shop)


@pytest.mark.parametrize("column, value", [
    ("placed", "2024-13-45 00:00:00+00"),  # not a timestamp
    ("customer_id", "seven"),  # a string where an integer belongs
    ("customer_id", 99999),  # breaks the foreign key
    ("total", "12345678901.5"),  # overflows numeric(10, 2)
])
def test_well_formed_file_with_bad_values_is_refused_and_rolled_back(shop, backup_dir, tmp_path, column, value):
    """Values that only PostgreSQL can judge: refused (by the reader or by the database), nothing changed."""
    path = Path(create_backup(backup_dir, database_url=shop))
    run_sql(shop, CHANGES)
    changed = snapshot(shop)
    doc = json.loads(gzip.decompress(path.read_bytes()))
    cols = doc["tables"]["orders"]["columns"]
    doc["tables"]["orders"]["data"][-1][cols.index(column)] = value
    bad = tmp_path / "backup_20240101_000000.backup.gz"
    bad.write_bytes(gzip.compress(json.dumps(doc).encode()))
    for show_diff in (True, False):
        with pytest.raises((InvalidBackupError, RestoreError)) as err:
            restore_backup(bad, database_url=shop, show_diff=show_diff)
        assert "orders" in str(err.value)
        assert snapshot(shop) == changed


# -- non-superuser owner ---------------------------------------------------------------------------------------------

OWNER_SCHEMA = """
CREATE TABLE accounts (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text, parent_id int REFERENCES accounts);
CREATE TABLE entries (id bigserial PRIMARY KEY, account_id int NOT NULL REFERENCES accounts, amount numeric,
                      doubled numeric GENERATED ALWAYS AS (amount * 2) STORED);
CREATE TABLE audit (id serial PRIMARY KEY, what text);
CREATE FUNCTION audit_it() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.audit (what) VALUES ('entry ' || NEW.id); RETURN NEW; END $$;
CREATE TRIGGER audit_entries AFTER INSERT ON entries FOR EACH ROW EXECUTE FUNCTION audit_it();
CREATE TABLE events (id int, at date NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_old PARTITION OF events FOR VALUES FROM (MINVALUE) TO ('2024-01-01');
CREATE TABLE events_new PARTITION OF events DEFAULT;
CREATE SCHEMA "Owner's Schema";
CREATE TABLE "Owner's Schema"."Cycle A" (id int PRIMARY KEY, b int);
CREATE TABLE "Owner's Schema"."Cycle B" (id int PRIMARY KEY, a int REFERENCES "Owner's Schema"."Cycle A"
                                         DEFERRABLE INITIALLY DEFERRED);
ALTER TABLE "Owner's Schema"."Cycle A" ADD FOREIGN KEY (b) REFERENCES "Owner's Schema"."Cycle B"
    DEFERRABLE INITIALLY DEFERRED;
CREATE TABLE alembic_version (version_num varchar(32) NOT NULL PRIMARY KEY);
"""

OWNER_DATA = """
INSERT INTO accounts (name) SELECT 'acct ' || i FROM generate_series(1, 20) i;
UPDATE accounts SET parent_id = id + 1 WHERE id < 20;
INSERT INTO entries (account_id, amount) SELECT 1 + i % 20, i * 0.5 FROM generate_series(1, 100) i;
INSERT INTO events SELECT i, DATE '2023-12-01' + i FROM generate_series(1, 60) i;
BEGIN;
INSERT INTO "Owner's Schema"."Cycle A" VALUES (1, 1);
INSERT INTO "Owner's Schema"."Cycle B" VALUES (1, 1);
COMMIT;
INSERT INTO alembic_version VALUES ('owner_v1');
"""


def test_restore_as_non_superuser_owner(owner_role, make_db, backup_dir):
    name, _ = make_db(owner=owner_role)
    url = db_url(name, owner_role)
    run_sql(url, OWNER_SCHEMA + OWNER_DATA)
    assert _one(url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == (False,)
    before = snapshot(url)

    path = create_backup(backup_dir, database_url=url)
    run_sql(url, """
        DELETE FROM entries WHERE id > 50;
        INSERT INTO entries (account_id, amount) VALUES (3, 1);
        UPDATE accounts SET name = 'x';
        DELETE FROM events WHERE id > 40;
        UPDATE "Owner's Schema"."Cycle B" SET a = NULL;
        UPDATE alembic_version SET version_num = 'owner_v2';
    """)
    assert snapshot(url) != before
    result = restore_backup(Path(path), database_url=url)
    assert result.migration_version_after == "owner_v1"
    assert_same(before, snapshot(url))
    assert _one(url, "SELECT count(*) FROM audit") == (100,)  # the audit trigger did not fire
    assert _one(url, "SELECT tgenabled FROM pg_trigger WHERE tgname = 'audit_entries'") == ("O",)

    # Into a fresh database of the same owner, with the schema only.
    fresh_name, _ = make_db(owner=owner_role)
    fresh = db_url(fresh_name, owner_role)
    run_sql(fresh, OWNER_SCHEMA)
    restore_backup(Path(path), database_url=fresh)
    assert_same(before, snapshot(fresh))
    assert _one(fresh, "INSERT INTO accounts (name) VALUES ('next') RETURNING id") == (21,)


# -- migration version ---------------------------------------------------------------------------------------------

def test_migration_version_follows_the_backup(shop, backup_dir):
    path = create_backup(backup_dir, database_url=shop)
    with gzip.open(path) as f:
        doc = json.load(f)
    assert doc["metadata"]["migration_version"] == "v1"
    assert "alembic_version" not in doc["tables"]

    run_sql(shop, "UPDATE alembic_version SET version_num = 'v9'")
    diff = calculate_diff(Path(path), database_url=shop, detailed=False)
    assert (diff.current_migration_version, diff.backup_migration_version) == ("v9", "v1")
    result = restore_backup(Path(path), database_url=shop)
    assert (result.migration_version_before, result.migration_version_after) == ("v9", "v1")
    assert _one(shop, "SELECT array_agg(version_num) FROM alembic_version") == (["v1"],)

    # A copy of the file under another name restores the same way (nothing depends on the path).
    copy = backup_dir / "backup_20200101_000000.backup.gz"
    shutil.copy(path, copy)
    run_sql(shop, "UPDATE alembic_version SET version_num = 'v10'")
    restore_backup(copy, database_url=shop, show_diff=False)
    assert _one(shop, "SELECT array_agg(version_num) FROM alembic_version") == (["v1"],)


def test_restore_into_database_with_columns_in_another_order(shop, make_db, backup_dir):
    """Columns are matched by name, not position: a database built by another migration path still restores."""
    path = create_backup(backup_dir, database_url=shop)
    _, other = make_db()
    permuted = (SCHEMA
                .replace("CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text);",
                         "CREATE TABLE customers (email text, name text NOT NULL, id serial PRIMARY KEY);")
                .replace("CREATE TABLE tags (id serial PRIMARY KEY, label text);",
                         "CREATE TABLE tags (label text, id serial PRIMARY KEY);"))
    assert permuted != SCHEMA
    run_sql(other, permuted)
    restore_backup(Path(path), database_url=other)
    query = ("SELECT md5(string_agg(concat_ws('|', id, name, email), ',' ORDER BY id)) FROM customers "
             "UNION ALL SELECT md5(string_agg(concat_ws('|', id, label), ',' ORDER BY id)) FROM tags")
    conn_a, conn_b = psycopg2.connect(shop), psycopg2.connect(other)
    try:
        cur_a, cur_b = conn_a.cursor(), conn_b.cursor()
        cur_a.execute(query)
        cur_b.execute(query)
        assert cur_a.fetchall() == cur_b.fetchall()
    finally:
        conn_a.close()
        conn_b.close()
    untouched = ("public.orders", "public.order_items", "public.notes", "crm.Contact Log", "public.alembic_version")
    a, b = snapshot(shop), snapshot(other)
    assert {k: a["tables"][k] for k in untouched} == {k: b["tables"][k] for k in untouched}
    assert a["sequences"] == b["sequences"]


# -- settings of the database or role ------------------------------------------------------------------------------

def test_application_timeouts_do_not_cut_backup_or_restore_short(make_db, backup_dir):
    """Applications often set statement_timeout (and idle-in-transaction timeouts) on their database or role; a
    backup or restore of a large table is one long statement and must not be cancelled by them (pg_dump resets
    them too)."""
    name, url = make_db()
    run_sql(url, """
        CREATE TABLE big (id int PRIMARY KEY, payload text NOT NULL);
        CREATE TABLE big_child (id int PRIMARY KEY, big_id int NOT NULL REFERENCES big);
        INSERT INTO big SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, 100000) i;
        INSERT INTO big_child SELECT i, i FROM generate_series(1, 100000) i;
    """)
    before = snapshot(url)
    run_sql(url, f'ALTER DATABASE "{name}" SET statement_timeout = \'20ms\'; '
                 f'ALTER DATABASE "{name}" SET idle_in_transaction_session_timeout = \'20ms\'')
    with pytest.raises(psycopg2.errors.QueryCanceled):  # the setting is in force for new sessions
        run_sql(url, "SELECT count(*) FROM big a, big b WHERE a.id = b.id + 1")

    path = create_backup(backup_dir, database_url=url)
    for show_diff in (False, True):  # the load itself, then the diff's counts too
        run_sql(url, "SET statement_timeout = 0; DELETE FROM big_child WHERE id % 2 = 0")
        restore_backup(Path(path), database_url=url, show_diff=show_diff)
    run_sql(url, f'ALTER DATABASE "{name}" RESET ALL')  # for the oracle's own long queries
    assert_same(before, snapshot(url))
