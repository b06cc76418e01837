"""The detailed diff's row fingerprints (core/diff.py): pure logic first, then the shortcut that skips the
server's join when a table's hash sums agree on both sides, against a real database.

The sums must never hide a change: rows that trade values keep the table's row count and key set, and must
still be reported as changed; a table whose rows differ only in a non-key column must be joined."""

from __future__ import annotations

import struct
from pathlib import Path

from backup_tasks.archive.rowjson import dump_rows
from backup_tasks.core import calculate_diff, create_backup, restore_backup
from backup_tasks.core.diff import _RowKeys
from backup_tasks.pg.catalog import Column, Table
from tests.conftest import run_sql


def _table(types: list[tuple[str, int]]) -> Table:
    columns = [Column(name=n, type_oid=oid, type_name=str(oid), generated=False) for n, oid in types]
    return Table(oid=1, schema="public", name="t", persistence="p", columns=columns)


def _decode(data: bytes) -> list[tuple[int, int, int]]:
    rows = []
    for offset in range(0, len(data), 34):
        fields, l1, tag, l2, key, l3, row = struct.unpack_from("!hiiiqiq", data, offset)
        assert (fields, l1, l2, l3) == (3, 4, 8, 8)
        rows.append((tag, key, row))
    return rows


def test_integer_key_prefix_is_read_from_the_lines():
    keys = _RowKeys(_table([("id", 20), ("v", 25)]), ["id", "v"], [0])
    assert keys.prefix
    rows = [(1, "a,b"), (-20, None), (300, 'q"\\')]
    lines = dump_rows(rows)
    totals = [0, 0, 0]
    decoded = _decode(keys.fingerprints(lines, None, 7, totals))
    expected_lines = lines.split(b",\n")
    assert decoded == [(7, hash(k), hash(line)) for k, line in zip((b"1", b"-20", b"300"), expected_lines)]
    assert totals[0] == 3
    assert totals[2] == sum(hash(line) for line in expected_lines) & ((1 << 64) - 1)


def test_other_keys_come_from_the_values_and_match_both_ways():
    # Text key in second position: not a prefix of integers, so the rows' values are used (parsed when absent).
    keys = _RowKeys(_table([("n", 23), ("code", 25)]), ["n", "code"], [1])
    assert not keys.prefix
    rows = [[1, "x,y"], [2, "z"]]
    lines = dump_rows(rows)
    from_file = keys.fingerprints(lines, None, 0, [0, 0, 0])
    from_values = keys.fingerprints(lines, rows, 0, [0, 0, 0])
    assert from_file == from_values
    assert [key for _, key, _ in _decode(from_file)] == [hash("x,y"), hash("z")]


def test_composite_integer_key_and_key_only_rows():
    composite = _RowKeys(_table([("a", 23), ("b", 21), ("v", 25)]), ["a", "b", "v"], [0, 1])
    assert [k for _, k, _ in _decode(composite.fingerprints(dump_rows([(1, 2, "v")]), None, 0, [0, 0, 0]))] == [
        hash((b"1", b"2"))]
    only_key = _RowKeys(_table([("id", 20)]), ["id"], [0])
    assert [k for _, k, _ in _decode(only_key.fingerprints(dump_rows([(5,), (6,)]), None, 0, [0, 0, 0]))] == [
        hash(b"5"), hash(b"6")]


def test_swapped_values_and_same_count_changes_are_reported(make_db, backup_dir):
    _, url = make_db()
    run_sql(url, "CREATE TABLE t (id int PRIMARY KEY, v text, n int);"
                 "INSERT INTO t SELECT i, 'v' || i, i FROM generate_series(1, 1000) i;"
                 "CREATE TABLE same (id bigint PRIMARY KEY, v text);"
                 "INSERT INTO same SELECT i, 'x' FROM generate_series(1, 100) i;")
    path = Path(create_backup(backup_dir, database_url=url))
    unchanged = calculate_diff(path, database_url=url)
    assert all((d.to_insert, d.to_delete, d.to_change) == (0, 0, 0) for d in unchanged.tables.values())

    # Same row count, same keys, same multiset of values per column: only the pairing changed.
    run_sql(url, "UPDATE t SET v = CASE id WHEN 10 THEN 'v20' WHEN 20 THEN 'v10' END WHERE id IN (10, 20);"
                 "UPDATE t SET n = n + 1 WHERE id = 500; UPDATE t SET n = n - 1 WHERE id = 501;"
                 "DELETE FROM t WHERE id = 999; INSERT INTO t VALUES (5000, 'v999', 999);")
    diff = calculate_diff(path, database_url=url)
    t = diff.tables["t"]
    assert (t.current_rows, t.backup_rows) == (1000, 1000)
    assert (t.to_insert, t.to_delete, t.to_change) == (1, 1, 4)
    assert (diff.tables["same"].to_insert, diff.tables["same"].to_delete, diff.tables["same"].to_change) == (0, 0, 0)
    # The dry run says the same.
    dry = restore_backup(path, database_url=url, dry_run=True).diff.tables["t"]
    assert (dry.to_insert, dry.to_delete, dry.to_change) == (1, 1, 4)
