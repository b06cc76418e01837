"""The detailed diff's row fingerprints (core/diff.py): pure logic first, then the shortcut that skips the
server's join when a table's hash sums agree on both sides, against a real database.

The sums must never hide a change: rows that trade values keep the table's row count and key set, and must
still be reported as changed; a table whose rows differ only in a non-key column must be joined."""

from __future__ import annotations

import gzip
import hashlib
import random
import re
import struct
from pathlib import Path

import pytest
from psycopg2.extensions import parse_dsn

from backup_tasks.archive.rowjson import dump_rows, lines_to_copy_text
from backup_tasks.core import calculate_diff, create_backup, restore_backup
from backup_tasks.core.diff import GIVE_UP_BYTES, Pairing, RowKeys
from backup_tasks.errors import InvalidBackupError
from tests.conftest import query, run_sql


def _decode(data: bytes) -> list[tuple[int, int, int]]:
    rows = []
    for offset in range(0, len(data), 34):
        fields, l1, tag, l2, key, l3, row = struct.unpack_from("!hiiiqiq", data, offset)
        assert (fields, l1, l2, l3) == (3, 4, 8, 8)
        rows.append((tag, key, row))
    return rows


def test_first_column_key_is_read_from_the_lines():
    keys = RowKeys(["id", "v"], [0])
    text = lines_to_copy_text(dump_rows([(1, "a,b\tc"), (-20, None), (300, 'q"\\')]))
    totals = [0, 0, 0]
    decoded = _decode(keys.fingerprints(text, 7, totals))
    lines = text.split(b"\n")[:-1]
    assert lines[0] == b"1\ta,b\\tc"  # the tab inside the value is escaped: the first raw tab ends the key
    assert decoded == [(7, hash(k), hash(line)) for k, line in zip((b"1", b"-20", b"300"), lines)]
    assert totals[0] == 3
    assert totals[1] == sum(hash(k) for k in (b"1", b"-20", b"300")) & ((1 << 64) - 1)
    assert totals[2] == sum(hash(line) for line in lines) & ((1 << 64) - 1)
    keys.fingerprints(text, 7, totals)
    assert totals[0] == 6  # added up over blocks


def test_keys_elsewhere_composite_and_whole_row():
    second = RowKeys(["n", "code"], [1])
    text = lines_to_copy_text(dump_rows([[1, "x,y"], [2, "z\tw"]]))
    assert [key for _, key, _ in _decode(second.fingerprints(text, 0, [0, 0, 0]))] == [
        hash(b"x,y"), hash(b"z\\tw")]
    composite = RowKeys(["a", "b", "v"], [0, 1])
    assert [k for _, k, _ in _decode(composite.fingerprints(b"1\t2\tv\n", 0, [0, 0, 0]))] == [hash((b"1", b"2"))]
    reordered = RowKeys(["a", "b", "v"], [2, 0])
    assert [k for _, k, _ in _decode(reordered.fingerprints(b"1\t2\tv\n", 0, [0, 0, 0]))] == [hash((b"v", b"1"))]
    only_key = RowKeys(["id"], [0])
    assert [k for _, k, _ in _decode(only_key.fingerprints(b"5\n6\n", 0, [0, 0, 0]))] == [hash(b"5"), hash(b"6")]
    with pytest.raises(InvalidBackupError):
        second.fingerprints(b"1\n", 0, [0, 0, 0])  # a row narrower than its key's position


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


def _pair(file_blocks: list[bytes], db_blocks: list[bytes]) -> tuple[list, list, list]:
    """Feed both sides the way the diff does (the database read up to the file's length); the fingerprint rows
    loaded, decoded, and the totals of each side."""
    totals = ([0, 0, 0], [0, 0, 0])
    pairs = Pairing(RowKeys(["id", "v"], [0]), 0, *totals)
    out, db = [], iter(db_blocks)
    for block in file_blocks:
        out.append(pairs.add(0, block))
        while pairs.wants_database():
            text = next(db, None)
            out.append(pairs.end(1) if text is None else pairs.add(1, text))
    out.append(pairs.end(0))
    while not pairs.ended[1]:
        text = next(db, None)
        out.append(pairs.end(1) if text is None else pairs.add(1, text))
    return _decode(b"".join(out)), *totals


def _lines(ids, changed=()) -> list[bytes]:
    return [b"%d\t%s\n" % (i, b"new" if i in changed else b"v") for i in ids]


def _blocks(lines: list[bytes], size: int) -> list[bytes]:
    return [b"".join(lines[i:i + size]) for i in range(0, len(lines), size)]


def test_rows_in_the_same_order_are_paired_off_without_fingerprints():
    lines = _lines(range(1000))
    loaded, file_totals, db_totals = _pair(_blocks(lines, 70), _blocks(lines, 333))  # blocks cut elsewhere
    assert loaded == [] and file_totals == db_totals == [0, 0, 0]


def test_after_a_difference_the_sides_are_paired_again():
    """Issue 14: only the changed row goes to the join; the rows after it are paired off again."""
    file_lines, db_lines = _lines(range(1000)), _lines(range(1000), changed={500})
    loaded, file_totals, db_totals = _pair(_blocks(file_lines, 64), _blocks(db_lines, 100))
    assert file_totals[0] == db_totals[0] == 1  # row 500 of each side; the other 999 were paired off
    assert file_totals[2] != db_totals[2]
    assert sorted((tag, key) for tag, key, _ in loaded) == [(0, hash(b"500")), (1, hash(b"500"))]


def test_moved_deleted_and_inserted_rows_are_the_only_ones_fingerprinted():
    """What a database does to its scan order: an UPDATE moves the row to the end (or later in its page), a DELETE
    leaves a gap, an INSERT fills one. Only those rows are fingerprinted, however the blocks are cut."""
    ids = list(range(5000))
    moved, deleted, near = set(range(7, 5000, 97)), set(range(30, 5000, 211)), {1234}
    db_order = [i for i in ids if i not in moved and i not in deleted and i not in near]
    db_order.insert(db_order.index(1240), 1234)  # moved a few rows down within its page
    db_order += sorted(moved) + [9001, 9002]  # updated rows at the end, two new rows after them
    changed = {i for i in moved if i % 2}
    file_lines = _lines(ids)
    db_lines = [b"%d\t%s\n" % (i, b"new" if i in changed else b"v") for i in db_order]
    for file_block, db_block in ((64, 100), (1000, 37), (5000, 5000)):
        loaded, file_totals, db_totals = _pair(_blocks(file_lines, file_block), _blocks(db_lines, db_block))
        expected_file = len(moved) + len(deleted)  # the file's rows the database has elsewhere or not at all
        assert file_totals[0] <= expected_file + 2 * (len(moved) + len(deleted) + 1) // 64 + 4
        assert {key for tag, key, _ in loaded if tag == 0} >= {hash(b"%d" % i) for i in deleted}
        assert {key for tag, key, _ in loaded if tag == 1} >= {hash(b"%d" % i) for i in changed | {9001, 9002}}
        # Every row that was not paired off was fingerprinted on its side: the counts add up.
        assert file_totals[0] + (5000 - file_totals[0]) == 5000
        paired_file = 5000 - file_totals[0]
        assert paired_file == len(db_lines) - db_totals[0]  # each pair is one row of each side
        assert paired_file >= 5000 - len(moved) - len(deleted) - 10


def test_another_order_altogether_goes_to_the_join():
    """A table rewritten in another physical order (CLUSTER, VACUUM FULL): pairing finds little and gives up;
    whatever was not paired is fingerprinted on both sides, the same number of rows each."""
    lines = _lines(range(100_000, 100_000 + 3 * GIVE_UP_BYTES // 8))  # 9 bytes a line
    shuffled = list(lines)
    random.Random(3).shuffle(shuffled)
    loaded, file_totals, db_totals = _pair(_blocks(lines, 500), _blocks(shuffled, 500))
    assert file_totals[0] == db_totals[0] > 0.9 * len(lines)
    assert len(loaded) == file_totals[0] + db_totals[0]
    assert file_totals[1:] == db_totals[1:]  # the same rows: the sums agree, so the server's join is skipped


def test_rows_one_side_lacks_are_fingerprinted():
    lines = _lines(range(3000))
    # The database lost its last 1000 rows: they are left over on the file's side.
    loaded, file_totals, db_totals = _pair(_blocks(lines, 100), _blocks(lines[:2000], 100))
    assert (file_totals[0], db_totals[0]) == (1000, 0)
    assert sorted(k for _, k, _ in loaded) == sorted(hash(b"%d" % i) for i in range(2000, 3000))
    # The file lacks rows the database has.
    loaded, file_totals, db_totals = _pair(_blocks(lines[:10], 5), _blocks(lines, 100))
    assert (file_totals[0], db_totals[0]) == (0, 2990)
    # An empty side.
    loaded, file_totals, db_totals = _pair([], _blocks(lines[:7], 3))
    assert (file_totals[0], db_totals[0]) == (0, 7)


def test_same_rows_in_another_physical_order_are_unchanged(make_db, backup_dir):
    """Rows rewritten with their own values move to the end of the table: the database then returns them in
    another order than the file holds them. Pairing in order stops at the first moved row; the sums and the
    join must still find nothing changed."""
    _, url = make_db()
    run_sql(url, "CREATE TABLE t (id int PRIMARY KEY, v text);"
                 "INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 5000) i;"
                 "CREATE TABLE k (a int, b text, PRIMARY KEY (b, a));"
                 "INSERT INTO k SELECT i, 'b' || (i % 10) FROM generate_series(1, 3000) i;")
    path = Path(create_backup(backup_dir, database_url=url))
    run_sql(url, "UPDATE t SET v = v WHERE id % 7 = 0; UPDATE k SET a = a WHERE a % 5 = 0;")
    assert query(url, "SELECT id FROM t LIMIT 7")[-1] != (7,)  # the scan order did change
    diff = calculate_diff(path, database_url=url)
    for key in ("t", "k"):
        d = diff.tables[key]
        assert (d.to_insert, d.to_delete, d.to_change) == (0, 0, 0), key
    run_sql(url, "UPDATE t SET v = 'changed' WHERE id = 4999; UPDATE k SET b = b || 'x' WHERE a = 3;")
    diff = calculate_diff(path, database_url=url)
    assert (diff.tables["t"].to_insert, diff.tables["t"].to_delete, diff.tables["t"].to_change) == (0, 0, 1)
    assert (diff.tables["k"].to_insert, diff.tables["k"].to_delete, diff.tables["k"].to_change) == (1, 1, 0)


def test_a_file_in_another_json_spelling_diffs_by_value_not_by_bytes(make_db, backup_dir, tmp_path):
    """The diff pairs the file's lines with the database's rows encoded the backup's way, by bytes. A file whose
    lines spell the same values otherwise (edited by hand, its sidecar recomputed with sha256sum, so its lines are
    read unparsed) pairs nothing, and its rows must still compare by value: unchanged rows are unchanged, and the
    changed ones are exactly what was done."""
    _, url = make_db()
    run_sql(url, "CREATE TABLE t (id int PRIMARY KEY, v text, f float8, b boolean, j jsonb);"
                 "INSERT INTO t SELECT i, 'v/' || i, i / 3.0, i % 2 = 0, jsonb_build_object('i', i) "
                 "FROM generate_series(1, 3000) i;")
    path = Path(create_backup(backup_dir, database_url=url))
    with gzip.open(path) as f:
        text = f.read()
    # ", " between values and "\/" for "/": the same JSON values, other bytes on every row line.
    edited = re.sub(rb'(?m)^\[(\d+),"v/', lambda m: b"[" + m.group(1) + b', "v\\/', text)
    assert edited.count(b'"v\\/') == 3000
    other = tmp_path / "backup_20250101_000000.backup.gz"
    other.write_bytes(gzip.compress(edited))
    other.with_name(other.name + ".sha256").write_text(f"{hashlib.sha256(other.read_bytes()).hexdigest()}  x\n")

    for backup in (path, other):
        d = calculate_diff(backup, database_url=url).tables["t"]
        assert (d.to_insert, d.to_delete, d.to_change) == (0, 0, 0), backup.name
    run_sql(url, "UPDATE t SET v = v || '!' WHERE id % 100 = 0; DELETE FROM t WHERE id % 1000 = 1;"
                 "INSERT INTO t VALUES (9001, 'new', 0.5, true, '{}')")
    for backup in (path, other):
        d = calculate_diff(backup, database_url=url).tables["t"]
        assert (d.to_insert, d.to_delete, d.to_change) == (3, 1, 30), backup.name
    # The database's rows are read by a child process, given the URL: the key=value form works as the URL does.
    key_value = " ".join(f"{k}={v}" for k, v in parse_dsn(url).items())
    d = calculate_diff(path, database_url=key_value).tables["t"]
    assert (d.to_insert, d.to_delete, d.to_change) == (3, 1, 30)
