"""The file format, without a database: writer output is one JSON document, the reader streams it back and
refuses what is not a complete, well-formed backup. Pure logic: no services needed."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from backup_tasks.archive.reader import BackupReader, scan
from backup_tasks.archive.rowjson import dump_rows, is_canonical, lines_to_copy_text
from backup_tasks.archive.writer import ArchiveWriter
from backup_tasks.errors import InvalidBackupError
from backup_tasks.tablekey import parse_table_key, table_key

META = {"timestamp": "2025-11-01T12:34:56.789Z", "migration_version": "0aa2828fc065",
        "database_name": "myapp_db", "database_host": "localhost", "format_version": 1}
TRICKY = ["", "null", "\\N", "a,b", 'say "hi"', "back\\slash", "tab\there", "new\nline", "cr\rx", "\x01ctl",
          "],\n[", "ünï©ødé ☃", "\\", "\\\\n", " leading", "trailing "]


def write(path: Path, tables: dict[str, tuple[list[str], list[tuple]]], batch: int = 3) -> Path:
    w = ArchiveWriter(path)
    w.begin(META)
    for key, (columns, rows) in tables.items():
        w.begin_table(key, {"columns": columns})
        for i in range(0, len(rows), batch):
            w.write_rows(rows[i:i + batch])
        w.end_table()
    w.finish()
    return path


def test_document_is_plain_json_and_streams_back(tmp_path):
    rows = [(i, s, None if i % 2 else True) for i, s in enumerate(TRICKY)]
    path = write(tmp_path / "b.gz", {"users": (["id", "s", "flag"], rows), "empty": (["a"], []), "z": ([], [()] * 3)})
    doc = json.load(gzip.open(path))
    assert doc["metadata"]["migration_version"] == "0aa2828fc065"
    assert doc["tables"]["users"]["row_count"] == len(rows)
    assert doc["tables"]["users"]["data"] == [list(r) for r in rows]
    assert doc["tables"]["empty"] == {"columns": ["a"], "data": [], "row_count": 0}
    assert doc["tables"]["z"]["data"] == [[], [], []]
    with BackupReader(path) as reader:
        seen = {t.header.key: [row for batch in t.batches() for row in batch] for t in reader.tables()}
    assert seen["users"] == [list(r) for r in rows] and seen["empty"] == [] and seen["z"] == [[], [], []]


def test_other_layouts_are_read_by_the_generic_parser(tmp_path):
    """A seed-style document (row_count before data, one line, indented) reads the same."""
    doc = {"metadata": META, "tables": {"users": {"row_count": 2, "columns": ["id", "name"],
                                                  "data": [[1, "Alice"], [2, "Bob"]]}}}
    for indent in (None, 2):
        path = tmp_path / f"seed{indent}.gz"
        path.write_bytes(gzip.compress(json.dumps(doc, indent=indent).encode()))
        contents = scan(path)
        assert [(t.key, t.row_count) for t in contents.tables] == [("users", 2)]


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t[: len(t) // 2], "truncated"),
    (lambda t: t.replace(b'"row_count":3', b'"row_count":4'), "row_count says 4"),
    (lambda t: t.replace(b"[1,", b"[1,2,", 1), "values"),
    (lambda t: t.replace(b"}}\n", b"}}\nextra"), "after the end"),
    (lambda t: t.replace(b'"users"', b'"empty"'), "appears twice"),
    (lambda t: t.replace(b'"format_version":1', b'"format_version":99'), "format version 99"),
    (lambda t: t.replace(b"[2,", b"[[2],", 1), "values must be strings, numbers, booleans or null"),
])
def test_damaged_documents_are_refused(tmp_path, mutate, message):
    good = write(tmp_path / "good.gz", {"empty": (["a"], []), "users": (["id", "s"], [(1, "a"), (2, "b"), (3, "c")])})
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(mutate(gzip.decompress(good.read_bytes()))))
    with pytest.raises(InvalidBackupError, match=message):
        scan(bad)


def test_not_gzip_and_empty_files_are_refused(tmp_path):
    (tmp_path / "plain.gz").write_bytes(b'{"metadata": {}}')
    (tmp_path / "empty.gz").write_bytes(b"")
    for name in ("plain.gz", "empty.gz"):
        with pytest.raises(InvalidBackupError):
            scan(tmp_path / name)


def test_dump_rows_is_one_row_per_line_and_canonical():
    rows = [(i, s, None) for i, s in enumerate(TRICKY)]
    lines = dump_rows(rows)
    assert lines.count(b"\n") == len(rows) - 1
    assert [json.loads(line.rstrip(b",")) for line in lines.split(b"\n")] == [list(r) for r in rows]
    assert is_canonical([list(r) for r in rows], lines)
    assert not is_canonical([list(r) for r in rows], lines.replace(b",", b", ", 1))


def test_lines_to_copy_text_keeps_null_distinct_and_escapes_as_copy_does():
    rows = [(1, "", None, True, 'a\\n"b\tc\nd\x01', "null", "\\N", "x,y", "],\n[", "ü")]
    assert lines_to_copy_text(dump_rows(rows)) == (
        b'1\t\t\\N\ttrue\ta\\\\n"b\\tc\\nd\x01\tnull\t\\\\N\tx,y\t],\\n[\t\xc3\xbc\n')
    two = lines_to_copy_text(dump_rows([(1, "a"), (2, None)]))
    assert two == b"1\ta\n2\t\\N\n"


def test_table_keys_are_unique_and_reversible():
    names = [("public", "users"), ("public", "a.b"), ("a", "b"), ("public", 'we"ird'), ("My Schema", "T"),
             ("x", 'a"."b'), ("public", "Mixed"), ("a.b", "c")]
    rng = random.Random(7)
    alphabet = 'ab."  _Zé'
    names += [("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))),
               "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))) for _ in range(2000)]
    names = list(dict.fromkeys(names))
    keys = [table_key(s, n) for s, n in names]
    assert len(set(keys)) == len(keys)
    assert all(parse_table_key(k) == sn for k, sn in zip(keys, names))
    assert table_key("public", "users") == "users" and table_key("a", "b") == "a.b"
    assert table_key("public", "a.b") == 'public."a.b"'
