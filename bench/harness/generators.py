"""The SQL that fills the benchmark's databases, server-side (generate_series), and that changes a target.

Every generator is deterministic (setseed) where it uses random(), so two builds of the same size hold the
same rows.
"""

from __future__ import annotations

# Awkward types, the same table the previous benchmark rounds measured: text with tabs, backslashes, both quotes,
# newlines and non-BMP Unicode, numeric, float with NaN/±Infinity/-0, timestamptz, jsonb, text[] with commas,
# quotes, backslashes and NULL elements, bytea with NUL/CR/LF, uuid; ~10 % NULLs in every column but the key.
MIXED_SQL = r"""
CREATE TABLE mixed (
    id   bigserial PRIMARY KEY,
    t    text,
    n    numeric(20,6),
    f    float8,
    ts   timestamptz,
    j    jsonb,
    arr  text[],
    b    bytea,
    u    uuid
);
SELECT setseed(0.42);
INSERT INTO mixed (t, n, f, ts, j, arr, b, u)
SELECT
    CASE WHEN random() < 0.1 THEN NULL
         ELSE 'row ' || i || E'\ttab\\backslash "double" ''single''\nsecond line ' || md5(i::text)
              || ' é ß Ω 日本語 🙂 ' || repeat('x', i % 37) END,
    CASE WHEN random() < 0.1 THEN NULL ELSE round((random() * 2e9 - 1e9)::numeric, 6) END,
    CASE WHEN random() < 0.1 THEN NULL
         WHEN i % 997 = 0 THEN 'NaN'::float8
         WHEN i % 997 = 1 THEN 'Infinity'::float8
         WHEN i % 997 = 2 THEN '-Infinity'::float8
         WHEN i % 997 = 3 THEN '-0'::float8
         ELSE (random() - 0.5) * 1e6 END,
    CASE WHEN random() < 0.1 THEN NULL
         ELSE timestamptz '2000-01-01 00:00:00+00' + random() * interval '9000 days' END,
    CASE WHEN random() < 0.1 THEN NULL
         ELSE jsonb_build_object('i', i, 'h', md5(i::text), 'f', random(),
                                 'tags', jsonb_build_array('a', i % 7, true, NULL),
                                 'nested', jsonb_build_object('q', E'quote " back \\ nl \n tab \t', 'u', 'ü€')) END,
    CASE WHEN random() < 0.1 THEN NULL
         ELSE ARRAY['x' || (i % 100), 'with,comma', 'quote"d', E'back\\slash', NULL, md5(i::text)] END,
    CASE WHEN random() < 0.1 THEN NULL ELSE decode(md5(i::text), 'hex') || '\x00ff5c0a0d22'::bytea END,
    CASE WHEN random() < 0.1 THEN NULL ELSE md5(i::text || 'u')::uuid END
FROM generate_series(1, {ROWS}) AS i;
"""

# Rows of several MB, half text (hex: compresses about 2:1, like documents) and half bytea (random: does not
# compress, like attachments). The subqueries name the outer row, so they run once per row, not once in all.
WIDE_SQL = r"""
CREATE TABLE wide (id int PRIMARY KEY, name text NOT NULL, body text, blob bytea);
SELECT setseed(0.19);
INSERT INTO wide
SELECT i, 'attachment ' || i,
       (SELECT string_agg(md5(i::text || '-' || g), '') FROM generate_series(1, {TEXT_CHUNKS}) g),
       (SELECT decode(string_agg(md5(i::text || random()::text || g), ''), 'hex')
          FROM generate_series(1, {BYTEA_CHUNKS}) g)
FROM generate_series(1, {ROWS}) i;
"""

# Many small tables: the per-table costs (catalog queries, statements, round trips) dominate.
MANY_SQL = r"""
DO $$
BEGIN
  FOR t IN 1..{TABLES} LOOP
    EXECUTE format('CREATE TABLE many_%s (id int PRIMARY KEY, name text NOT NULL, qty int, price numeric(10,2), '
                   'at timestamptz)', lpad(t::text, 4, '0'));
    EXECUTE format('INSERT INTO many_%s SELECT g, ''item '' || g, g %% 17, g * 1.25, '
                   'timestamptz ''2020-01-01 00:00:00+00'' + g * interval ''1 hour'' FROM generate_series(1, %s) g',
                   lpad(t::text, 4, '0'), {ROWS});
  END LOOP;
END $$;
"""

MARKER_SQL = """
CREATE TABLE bench_marker (dataset text NOT NULL, params text NOT NULL, built_at timestamptz NOT NULL,
                           complete boolean NOT NULL)
"""


def mixed_sql(rows: int) -> str:
    return MIXED_SQL.replace("{ROWS}", str(int(rows)))


def wide_sql(rows: int, row_mb: float) -> str:
    half = row_mb * 1024 * 1024 / 2
    return (WIDE_SQL.replace("{ROWS}", str(int(rows)))
            .replace("{TEXT_CHUNKS}", str(max(1, int(half / 32))))   # md5() is 32 hex characters
            .replace("{BYTEA_CHUNKS}", str(max(1, int(half / 16)))))  # ... and 16 bytes once decoded


def many_sql(tables: int, rows: int) -> str:
    return MANY_SQL.replace("{TABLES}", str(int(tables))).replace("{ROWS}", str(int(rows)))


# ~1 % of the rows of the big tables changed since the backup (and 0.1 % of the accounts deleted): what a
# restore --yes or a diff finds on a database that went on being used after its backup.
CHANGE_PGBENCH = (
    "UPDATE mixed SET t = coalesce(t, '') || 'x' WHERE id % 100 = 0",
    "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0",
    "DELETE FROM pgbench_accounts WHERE aid % 1000 = 1",
)
CHANGE_WIDE = ("UPDATE wide SET name = name || ' (edited)' WHERE id % 100 = 1",)
CHANGE_MANY = (
    """DO $$ DECLARE r record; BEGIN
         FOR r IN SELECT tablename FROM pg_tables WHERE tablename LIKE 'many\\_%' LOOP
           EXECUTE format('UPDATE %I SET qty = qty + 1 WHERE id %% 100 = 1', r.tablename);
         END LOOP; END $$""",
)
