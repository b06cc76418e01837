"""An independent oracle for database contents: nothing here uses backup_tasks.

Per table: count(*) and md5 of the sorted `row::text` values FROM ONLY that table; every sequence's
last_value and is_called; every large object's owner, size and md5 of its bytes, by oid. Two databases hold the
same data iff their snapshots are equal.
"""

from __future__ import annotations

import psycopg2


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def snapshot(url: str) -> dict:
    conn = psycopg2.connect(url)
    try:
        cur = conn.cursor()
        cur.execute("SET extra_float_digits = 3; SET DateStyle = ISO; SET TimeZone = 'UTC'; "
                    "SET IntervalStyle = postgres; SET bytea_output = hex")
        cur.execute(
            """
            SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'r' AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
            ORDER BY 1, 2
            """
        )
        tables = cur.fetchall()
        out: dict = {"tables": {}, "sequences": {}}
        for schema, name in tables:
            cur.execute(
                f"SELECT count(*), md5(coalesce(string_agg(r, E'\\n' ORDER BY r COLLATE \"C\"), '')) "
                f"FROM (SELECT t::text AS r FROM ONLY {_q(schema)}.{_q(name)} t) s"
            )
            out["tables"][f"{schema}.{name}"] = cur.fetchone()
        cur.execute(
            """
            SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'S' AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' ORDER BY 1, 2
            """
        )
        for schema, name in cur.fetchall():
            cur.execute(f"SELECT last_value, is_called FROM {_q(schema)}.{_q(name)}")
            out["sequences"][f"{schema}.{name}"] = cur.fetchone()
        cur.execute("SELECT oid, pg_get_userbyid(lomowner), length(lo_get(oid)), md5(lo_get(oid)) "
                    "FROM pg_largeobject_metadata ORDER BY oid")
        out["large_objects"] = {int(oid): (owner, size, digest) for oid, owner, size, digest in cur.fetchall()}
        return out
    finally:
        conn.close()


def assert_same(before: dict, after: dict) -> None:
    assert before["tables"].keys() == after["tables"].keys()
    diffs = {k: (before["tables"][k], after["tables"][k]) for k in before["tables"]
             if before["tables"][k] != after["tables"][k]}
    assert not diffs, f"tables differ: {diffs}"
    assert before["sequences"] == after["sequences"]
    assert before["large_objects"] == after["large_objects"], "large objects differ"
