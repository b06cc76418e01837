"""Bad input through the CLI, each file given to `restore --yes`, `restore --dry-run`, `diff` and `verify` (all
--local, each a real `backupctl` process): a clear `Error:` line (plus an optional `Hint:`), the exit code of
its kind, never a traceback, and the database unchanged by the independent oracle.

The files are a real backup of the seeded database taken apart and edited (decompress, edit, recompress), in the
tool's own line layout and as single-line JSON (read by the generic parser), plus hand-made documents.

What each command can know decides what it must refuse:
- a damaged or malformed file (FILE): every command refuses it, exit 4;
- names the database lacks, SQL in names (SCHEMA): restore and its dry run refuse, exit 5; diff lists the table
  as not in the database and verify (which reads no database) accepts the well-formed file;
- values PostgreSQL rejects, duplicate keys, broken references (VALUE): only loading them finds out, so the
  restore refuses (exit 6, rolled back) while the dry run, diff and verify, which load nothing, succeed.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from backup_tasks.core import restore_backup
from backup_tasks.models import FORMAT_VERSION
from tests.conftest import query
from tests.oracle import assert_same, snapshot

from .support import assert_clean_error, assert_ok, cli_start, gz, layout_dump

pytestmark = pytest.mark.adversarial

SQL = 'x"; DROP TABLE y; --'
FILE = {"restore": 4, "dry-run": 4, "diff": 4, "verify": 4}
SCHEMA = {"restore": 5, "dry-run": 5, "diff": 0, "verify": 0}
VALUE = {"restore": 6, "dry-run": 0, "diff": 0, "verify": 0}


def edit(text: str, old: str, new: str) -> bytes:
    assert old in text, f"the seeded backup no longer contains {old!r}"
    return gz(text.replace(old, new, 1))


def generic(text: str, change: Callable[[dict], object] | None = None) -> bytes:
    """The document, changed, as single-line JSON (not the tool's line layout: read by the generic parser)."""
    doc = json.loads(text)
    if change:
        change(doc)
    return gz(json.dumps(doc))


def layout(text: str, change: Callable[[dict], object]) -> bytes:
    doc = json.loads(text)
    change(doc)
    data = layout_dump(doc)
    assert data is not None
    return gz(data)


def rename_table(doc: dict, old: str, new: str, schema: str = "public", key: str | None = None) -> None:
    key = key or new
    tables = doc["tables"]
    doc["tables"] = {(key if k == old else k): v for k, v in tables.items()}
    doc["tables"][key].update(schema=schema, name=new)
    for entry in doc["metadata"]["contents"]:
        if entry["key"] == old:
            entry.update(key=key, schema=schema, name=new)


def rename_column(doc: dict, table: str, old: str, new: str) -> None:
    for holder in [doc["tables"][table]] + [c for c in doc["metadata"]["contents"] if c["key"] == table]:
        holder["columns"] = [new if c == old else c for c in holder["columns"]]


def drop_column(doc: dict, table: str, column: str) -> None:
    t = doc["tables"][table]
    i = t["columns"].index(column)
    for holder in [t] + [c for c in doc["metadata"]["contents"] if c["key"] == table]:
        del holder["columns"][i]
        del holder["column_types"][i]
    for row in t["data"]:
        del row[i]


def set_value(doc: dict, table: str, row: int, column: str, value) -> None:
    t = doc["tables"][table]
    t["data"][row][t["columns"].index(column)] = value


LOGS_DATA = '"data":[\n[1,"log 1",1],\n[2,"",2],\n[3,"log 3",3],\n[4,"log 4",4],\n[5,null,5],\n[6,"log 6",6]\n]'

# id -> (builder(text, raw gzip bytes) -> file bytes, expected exit code per command)
CASES: dict[str, tuple[Callable[[str, bytes], bytes], dict[str, int]]] = {
    # -- damaged gzip, not gzip, empty --
    "truncated-gzip-half": (lambda t, raw: raw[: len(raw) // 2], FILE),
    "truncated-document": (lambda t, raw: gz(t[: len(t) * 2 // 3]), FILE),
    "gzip-bad-crc": (lambda t, raw: raw[:-8] + bytes([raw[-8] ^ 0xFF]) + raw[-7:], FILE),
    "not-gzip-text": (lambda t, raw: b"this is not a backup\n" * 20, FILE),
    "not-gzip-plain-json": (lambda t, raw: t.encode(), FILE),
    "not-gzip-magic-then-noise": (lambda t, raw: b"\x1f\x8b" + random.Random(7).randbytes(500), FILE),
    "empty-file": (lambda t, raw: b"", FILE),
    "gzip-of-nothing": (lambda t, raw: gz(b""), FILE),
    # -- gzip of something that is not JSON --
    "gzip-of-invalid-json": (lambda t, raw: gz("{not json at all"), FILE),
    "gzip-of-binary": (lambda t, raw: gz(random.Random(8).randbytes(4000)), FILE),
    "gzip-of-latin1": (lambda t, raw: gz(t.encode().replace("ünï".encode(), "ünï".encode("latin-1"))), FILE),
    "invalid-json-in-rows": (lambda t, raw: edit(t, '[3,"log 3",3]', '[3,"log 3",3'), FILE),
    "data-after-document": (lambda t, raw: gz(t + '{"more":1}\n'), FILE),
    # -- valid JSON of the wrong shape --
    "shape-list": (lambda t, raw: gz(json.dumps([json.loads(t)])), FILE),
    "shape-empty-object": (lambda t, raw: gz("{}"), FILE),
    "shape-missing-tables": (lambda t, raw: generic(t, lambda d: d.pop("tables")), FILE),
    "shape-missing-metadata": (lambda t, raw: generic(t, lambda d: d.pop("metadata")), FILE),
    "shape-tables-list": (lambda t, raw: generic(t, lambda d: d.update(tables=list(d["tables"].values()))), FILE),
    "shape-table-is-list": (lambda t, raw: generic(t, lambda d: d["tables"].update(logs=[[1, "a", 1]])), FILE),
    "shape-data-object-generic": (lambda t, raw: generic(t, lambda d: d["tables"]["logs"].update(data={"a": 1})),
                                  FILE),
    "shape-data-object-layout": (lambda t, raw: edit(t, LOGS_DATA, '"data":{"a":1}'), FILE),
    "shape-data-missing": (lambda t, raw: generic(t, lambda d: d["tables"]["logs"].pop("data")), FILE),
    "shape-row-is-object": (lambda t, raw: edit(t, '[3,"log 3",3]', '{"id":3,"msg":"log 3","level":3}'), FILE),
    "shape-metadata-bad-field": (lambda t, raw: generic(t, lambda d: d["metadata"].update(timestamp="yesterday")),
                                 FILE),
    "shape-table-twice": (lambda t, raw: gz(t.replace('\n}}', ',\n' + re.search(r'"y":\{.*?\}(?=\n\}\})', t, re.S)
                                                      .group(0) + '\n}}')), FILE),
    # -- row_count --
    "row-count-too-high-layout": (lambda t, raw: edit(t, '"row_count":6', '"row_count":7'), FILE),
    "row-count-too-low-generic": (lambda t, raw: generic(t, lambda d: d["tables"]["logs"].update(row_count=5)),
                                  FILE),
    "row-count-missing-generic": (lambda t, raw: generic(t, lambda d: d["tables"]["logs"].pop("row_count")), FILE),
    # -- rows of the wrong width --
    "row-extra-value-layout": (lambda t, raw: edit(t, '[3,"log 3",3]', '[3,"log 3",3,4]'), FILE),
    "row-missing-value-layout": (lambda t, raw: edit(t, '[3,"log 3",3]', '[3,"log 3"]'), FILE),
    # -- values of a type no column takes --
    "value-nested-list": (lambda t, raw: edit(t, '[3,"log 3",3]', '[3,"log 3",[1,2]]'), FILE),
    "value-object-generic": (lambda t, raw: generic(t, lambda d: set_value(d, "items", 0, "meta", {"k": 1})), FILE),
    # -- format version --
    "newer-format-layout": (lambda t, raw: edit(t, '"format_version":1', f'"format_version":{FORMAT_VERSION + 1}'),
                            FILE),
    "newer-format-generic": (lambda t, raw: generic(t, lambda d: d["metadata"].update(format_version=99)), FILE),
    # -- names the database lacks, and names that carry SQL --
    "sql-table-name-layout": (lambda t, raw: layout(t, lambda d: rename_table(d, "logs", SQL)), SCHEMA),
    "sql-table-name-generic": (lambda t, raw: generic(t, lambda d: rename_table(d, "tags", SQL)), SCHEMA),
    "sql-schema-name": (lambda t, raw: generic(t, lambda d: rename_table(
        d, "y", "y", schema='public"; DROP TABLE y; --', key='"public""; DROP TABLE y; --".y')), SCHEMA),
    "sql-column-name": (lambda t, raw: layout(t, lambda d: rename_column(d, "logs", "msg", SQL)), SCHEMA),
    "unknown-table": (lambda t, raw: generic(t, lambda d: rename_table(d, "logs", "nope")), SCHEMA),
    "unknown-column": (lambda t, raw: layout(t, lambda d: rename_column(d, "items", "qty", "quantity")), SCHEMA),
    "missing-column": (lambda t, raw: layout(t, lambda d: drop_column(d, "items", "price")), SCHEMA),
    "other-column-type": (lambda t, raw: layout(t, lambda d: [c["column_types"].__setitem__(2, "text") for c in
                                                              [d["tables"]["logs"]] + [e for e in d["metadata"]
                                                              ["contents"] if e["key"] == "logs"]]), SCHEMA),
    # -- values PostgreSQL refuses, duplicate keys, broken references --
    "abc-in-integer-column": (lambda t, raw: edit(t, '[3,"log 3",3]', '[3,"log 3","abc"]'), VALUE),
    "abc-in-integer-key-table": (lambda t, raw: layout(t, lambda d: set_value(d, "items", 4, "qty", "abc")), VALUE),
    "bool-in-integer": (lambda t, raw: generic(t, lambda d: set_value(d, "logs", 1, "level", True)), VALUE),
    "bad-timestamp": (lambda t, raw: layout(t, lambda d: set_value(d, "items", 1, "created", "not a time")), VALUE),
    "bad-jsonb": (lambda t, raw: layout(t, lambda d: set_value(d, "items", 1, "meta", "{not json")), VALUE),
    "null-in-not-null": (lambda t, raw: layout(t, lambda d: set_value(d, "items", 1, "name", None)), VALUE),
    "duplicate-primary-key": (lambda t, raw: layout(t, lambda d: set_value(d, "items", 1, "id", 1)), VALUE),
    "broken-foreign-key": (lambda t, raw: edit(t, '[2,"red"]', '[99,"red"]'), VALUE),
}


# What the error must be about, by exit code: the file itself, the schema, or the value PostgreSQL rejected (and
# not, say, a lock timeout that happens to share exit code 6).
EXPECTED_WORDS = {
    4: ("backup_20250101_000000.backup.gz", "table 'logs'", "table 'items'"),
    5: ("does not match the backup",),
    6: ("invalid input", "violates", "duplicate key", "null value"),
}


def commands(path: Path, url: str) -> dict[str, list[str]]:
    return {
        "restore": ["restore", str(path), "--local", "--yes", "--database-url", url],
        "dry-run": ["restore", str(path), "--local", "--dry-run", "--database-url", url],
        "diff": ["diff", str(path), "--local", "--database-url", url],
        "verify": ["verify", str(path), "--local"],
    }


@pytest.fixture
def unchanged(seeded):
    """Put the seeded database back after a test that changed it, so one failure does not cascade."""
    yield seeded
    if snapshot(seeded.url) != seeded.before:
        restore_backup(seeded.backup, database_url=seeded.url, show_diff=False)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_file_is_refused_clearly_and_changes_nothing(case, unchanged, tmp_path):
    seeded = unchanged
    build, expected = CASES[case]
    path = tmp_path / "backup_20250101_000000.backup.gz"
    path.write_bytes(build(seeded.text, seeded.backup.read_bytes()))

    # Two at a time: the restore beside verify (which reads no database), then the dry run beside diff. A restore
    # beside a diff can wait out its lock timeout: the diff's two sessions, one holding a table lock while the
    # other queues behind the restore's TRUNCATE, stall each other (reported; the worker's locks prevent it).
    results = {}
    for pair in (("restore", "verify"), ("dry-run", "diff")):
        procs = {name: cli_start(*commands(path, seeded.url)[name]) for name in pair}
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=120)
            results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    for name, code in expected.items():
        if code:
            line = assert_clean_error(results[name], code)
            assert any(word in line for word in EXPECTED_WORDS[code]), line
        else:
            assert_ok(results[name])
    assert_same(seeded.before, snapshot(seeded.url))


def test_sql_in_names_is_only_data(unchanged, tmp_path):
    """The injected names reach the user as quoted data in the error, and `y` still holds its rows."""
    seeded = unchanged
    path = tmp_path / "backup_20250101_000000.backup.gz"
    path.write_bytes(CASES["sql-table-name-generic"][0](seeded.text, b""))
    proc = cli_start(*commands(path, seeded.url)["restore"])
    out, err = proc.communicate(timeout=60)
    line = assert_clean_error(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), 5)
    assert SQL in line
    assert query(seeded.url, "SELECT count(*) FROM y") == [(2,)]
