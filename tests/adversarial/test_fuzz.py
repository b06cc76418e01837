"""Fuzz: 1,000 seeded, deterministic mutations of a real backup of the small seeded database, each restored by
the Python API in dry-run and in real mode. Every one must either restore exactly or be refused with a
BackupError and the database unchanged (tests/oracle.py). Any other exception is a failure.

"Exactly" is judged without backup_tasks: the mutated file is decompressed with Python's gzip and parsed with
Python's json, and every table's rows (as a multiset of text values) are compared with what the database holds,
each file value first put through PostgreSQL's own input function for the column's type (`'…'::type::text`).
A JSON number or boolean given for a text column is stored as its JSON text (README), so there it is compared
as text (booleans) or by numeric value (numbers: `1e5` is stored as `100000.0` by the line reader and as `1E+5`
by the generic one, not as written); likewise a number given for a bytea column.

Half the mutations are byte-level (bits and bytes of the compressed file, and of the decompressed text before
recompressing), half JSON-level (a value, key or structure changed, then written either as single-line JSON,
read by the generic ijson path, or in the tool's own line layout). Mutations that keep the file valid and
restorable (a row shuffle, a new text value, reordered columns…) must be accepted: refusing everything would
pass the first rule, so the test also fails when those are refused, or when too few mutations restore.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import random
import time
import zlib
from collections import Counter
from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql

from backup_tasks.core import restore_backup
from backup_tasks.errors import BackupError
from tests.conftest import query
from tests.oracle import snapshot

from .support import TABLES, gz, layout_dump, run_sql

pytestmark = [pytest.mark.adversarial, pytest.mark.timeout(400)]

SEED = 20251126
BYTE_MUTATIONS = 500
JSON_MUTATIONS = 500
TEXT_TYPES = {"text", "character varying", "character"}
INVALID = object()

POOL: list[Any] = [
    0, 1, -1, 7, 32767, 32768, 2 ** 31, -(2 ** 31) - 1, 2 ** 63 - 1, -(2 ** 63), 2 ** 64, 10 ** 30,
    1.5, -0.0, 0.1, 1e16, 1e308, 2.5e-7, 3.0,
    "", "abc", "5", "-12", "1e5", "true", "f", "null", "NaN", "2024-02-29 12:00:00+02", "2024-02-30", "infinity",
    "{\"a\": [1, 2]}", "[1,2]", "\\x00ff", "\\xZZ", "\u0000", "a\u0000b", "ünï☃ 😀", "\"quoted\"\\", "tab\tnl\n",
    "x" * 5000, " 42 ", "1,5", "12.345", "-0", "99999999999999999999",
    True, False, None, [], [1, 2], {}, {"a": [1]},
]
SAFE_TEXT = ["", "plain", "ünï☃ 😀", "\"quoted\", back\\slash", "tab\tnl\nline", "null", "5", "x" * 300]


# -- the independent judge ---------------------------------------------------------------------------------------

class Judge:
    """Decides with Python's gzip/json and PostgreSQL's input functions whether the database holds exactly what
    a document says. One session pinned like a backup's (UTC, ISO dates, hex bytea, exact floats)."""

    def __init__(self, url: str, types: dict[str, dict[str, str]]):
        self.conn = psycopg2.connect(url)
        self.conn.autocommit = True
        cur = self.conn.cursor()
        cur.execute("SET TimeZone = 'UTC'; SET DateStyle = ISO, YMD; SET IntervalStyle = postgres; "
                    "SET extra_float_digits = 3; SET bytea_output = hex")
        self.types = types
        self._cast: dict[tuple[str, str], Any] = {}

    def close(self) -> None:
        self.conn.close()

    def cast(self, text: str, type_name: str) -> Any:
        key = (type_name, text)
        if key not in self._cast:
            try:
                with self.conn.cursor() as cur:
                    cur.execute(sql.SQL("SELECT %s::{}::text").format(sql.SQL(type_name)), (text,))
                    self._cast[key] = cur.fetchone()[0]
            except psycopg2.Error:
                self._cast[key] = INVALID
        return self._cast[key]

    def expected(self, value: Any, type_name: str) -> Any:
        """The text the database must show for `value` loaded into a column of `type_name`."""
        if value is None:
            return None
        if type_name == "bytea" and isinstance(value, (int, float)) and not isinstance(value, bool):
            # A number in a bytea column: its text's bytes, the text rendered as the reader renders numbers.
            return ("bytea-number", Decimal(repr(value)) if isinstance(value, float) else Decimal(value))
        if type_name in TEXT_TYPES:
            if isinstance(value, bool):
                return "true" if value else "false"
            if isinstance(value, (int, float)):
                return ("number", Decimal(repr(value)) if isinstance(value, float) else Decimal(value))
            if isinstance(value, str):
                return INVALID if "\x00" in value else value
            return INVALID
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        elif isinstance(value, str):
            if "\x00" in value:
                return INVALID
            text = value
        else:
            return INVALID
        return self.cast(text, type_name)

    @staticmethod
    def _same(want: Any, got: Any) -> bool:
        if isinstance(want, tuple) and want and want[0] in ("number", "bytea-number"):
            try:
                if want[0] == "bytea-number":
                    got = bytes.fromhex(got[2:]).decode()
                return got is not None and Decimal(got) == want[1]
            except (InvalidOperation, ValueError, TypeError):
                return False
        return want == got

    def mismatch(self, doc: Any) -> str | None:
        """None when the database holds exactly `doc`'s data; otherwise what differs."""
        if not isinstance(doc, dict) or not isinstance(doc.get("tables"), dict):
            return "the restore succeeded but the file is not a document of tables"
        cur = self.conn.cursor()
        seen = set()
        for key, table in doc["tables"].items():
            if key not in self.types:
                return f"the restore succeeded with table {key!r}, which the database does not have"
            seen.add(key)
            columns, rows = table["columns"], table["data"]
            types = self.types[key]
            if set(columns) != set(types):
                return f"{key}: the restore succeeded with columns {columns}"
            want = []
            for row in rows:
                values = tuple(self.expected(v, types[c]) for c, v in zip(columns, row))
                if any(v is INVALID for v in values):
                    return f"{key}: the restore succeeded with a value PostgreSQL rejects: {row!r}"
                want.append(values)
            cur.execute(sql.SQL("SELECT {} FROM ONLY public.{}").format(
                sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns),
                sql.Identifier(key)))
            got = cur.fetchall()
            if len(got) != len(want):
                return f"{key}: {len(got)} rows in the database, {len(want)} in the file"
            unmatched = Counter(got)
            plain = Counter(w for w in want if not any(isinstance(v, tuple) for v in w))
            if plain - unmatched:
                return f"{key}: rows of the file missing from the database: {list(plain - unmatched)[:3]}"
            unmatched -= plain
            for w in (w for w in want if any(isinstance(v, tuple) for v in w)):
                hit = next((g for g in unmatched if all(self._same(a, b) for a, b in zip(w, g))), None)
                if hit is None:
                    return f"{key}: row {w} of the file is not in the database"
                unmatched[hit] -= 1
                if not unmatched[hit]:
                    del unmatched[hit]
        for key in set(self.types) - seen:
            cur.execute(sql.SQL("SELECT count(*) FROM ONLY public.{}").format(sql.Identifier(key)))
            if cur.fetchone()[0]:
                return f"{key} is not in the file but was not emptied"
        for entry in doc["metadata"].get("sequences", []):
            cur.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(
                sql.Identifier(entry["schema"], entry["name"])))
            if cur.fetchone() != (entry["last_value"], entry["is_called"]):
                return f"sequence {entry['name']} is not at {entry['last_value']}/{entry['is_called']}"
        return None


def parse_independently(data: bytes) -> Any:
    """The document Python's own gzip and json read from `data`; None when they cannot."""
    try:
        text = gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        try:  # the first gzip member only, in case the tool ignores trailing bytes
            d = zlib.decompressobj(31)
            text = d.decompress(data)
            if not d.eof:
                return None
        except zlib.error:
            return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


# -- mutations ---------------------------------------------------------------------------------------------------

INTERESTING = b'"\\,:[]{}\n 0123456789.-eEtfn\x00\xff\xc3'


def mutate_bytes(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    b = bytearray(data)
    op = rng.choice(["flip", "set", "insert", "delete", "delete-span", "duplicate-span", "truncate"])
    pos = rng.randrange(len(b))
    if op == "flip":
        b[pos] ^= 1 << rng.randrange(8)
    elif op == "set":
        b[pos] = rng.choice(INTERESTING) if rng.random() < 0.7 else rng.randrange(256)
    elif op == "insert":
        b[pos:pos] = bytes(rng.choice(INTERESTING) for _ in range(rng.randint(1, 3)))
    elif op == "delete":
        del b[pos]
    elif op == "delete-span":
        del b[pos:pos + rng.randint(2, 60)]
    elif op == "duplicate-span":
        n = rng.randint(2, 80)
        b[pos:pos] = b[pos:pos + n]
    else:
        del b[pos:]
    return bytes(b), f"{op}@{pos}"


def mutate_lines(rng: random.Random, text: bytes) -> tuple[bytes, str]:
    lines = text.split(b"\n")
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    op = rng.choice(["swap-lines", "duplicate-line", "delete-line"])
    if op == "swap-lines":
        lines[i], lines[j] = lines[j], lines[i]
    elif op == "duplicate-line":
        lines.insert(i, lines[j])
    else:
        del lines[i]
    return b"\n".join(lines), f"{op}({i},{j})"


def _nodes(value: Any, path=()):
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _nodes(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _nodes(v, path + (i,))


def _get(doc: Any, path: tuple) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def _contents(doc: dict, key: str) -> list[dict]:
    return [c for c in doc["metadata"].get("contents", []) if c.get("key") == key]


def mutate_json(rng: random.Random, doc: dict) -> tuple[dict, str, bool]:
    """(mutated copy, description, must_accept): must_accept when the result is valid and restorable."""
    doc = copy.deepcopy(doc)
    tables = doc["tables"]
    key = rng.choice([k for k in tables if tables[k]["data"]] or list(tables))
    table = tables[key]
    op = rng.choice(["cell", "cell", "cell", "leaf", "leaf", "drop-key", "add-key", "rename-key",
                     "row-count", "drop-row", "drop-row-fixed", "duplicate-row", "shuffle-rows", "reorder-columns",
                     "text-value", "drop-table", "move-table", "metadata", "sequence"])
    if op == "cell" and table["data"]:
        r, c = rng.randrange(len(table["data"])), rng.randrange(len(table["columns"]))
        table["data"][r][c] = v = copy.deepcopy(rng.choice(POOL))
        return doc, f"cell {key}[{r}][{table['columns'][c]}] = {v!r:.60}", False
    if op == "leaf":
        path, _ = rng.choice([(p, v) for p, v in _nodes(doc) if p and not isinstance(v, (dict, list))])
        _get(doc, path[:-1])[path[-1]] = v = copy.deepcopy(rng.choice(POOL))
        return doc, f"leaf {path} = {v!r:.60}", False
    if op in ("drop-key", "add-key", "rename-key"):
        path, node = rng.choice([(p, v) for p, v in _nodes(doc) if isinstance(v, dict) and v])
        k = rng.choice(list(node))
        if op == "drop-key":
            del node[k]
        elif op == "add-key":
            node[rng.choice(["extra", "data", "columns", "row_count", "metadata", "x\"y"])] = rng.choice(POOL)
        else:
            node[k + rng.choice(["_", " ", "X"])] = node.pop(k)
        return doc, f"{op} {path}/{k}", False
    if op == "row-count":
        table["row_count"] += rng.choice([-1, 1, 1000])
        return doc, f"row_count {key} -> {table['row_count']}", False
    if op in ("drop-row", "drop-row-fixed") and table["data"]:
        del table["data"][rng.randrange(len(table["data"]))]
        if op == "drop-row-fixed":
            table["row_count"] -= 1
        # Dropping an `items` row can leave `tags` referring to it.
        return doc, f"{op} {key}", op == "drop-row-fixed" and key != "items"
    if op == "duplicate-row" and table["data"]:
        table["data"].append(copy.deepcopy(rng.choice(table["data"])))
        table["row_count"] += 1
        return doc, f"duplicate-row {key}", key in ("logs", "y")  # no key on logs and y: duplicates are fine
    if op == "shuffle-rows":
        rng.shuffle(table["data"])
        return doc, f"shuffle-rows {key}", True
    if op == "reorder-columns":
        order = list(range(len(table["columns"])))
        rng.shuffle(order)
        for holder in [table] + _contents(doc, key):
            holder["columns"] = [holder["columns"][i] for i in order]
            holder["column_types"] = [holder["column_types"][i] for i in order]
        table["data"] = [[row[i] for i in order] for row in table["data"]]
        return doc, f"reorder-columns {key} {order}", True
    if op == "text-value":
        texts = [(t, c) for t in tables for c, ty in zip(tables[t]["columns"], tables[t]["column_types"])
                 if ty == "text" and tables[t]["data"] and not (t, c) == ("tags", "tag")]
        t, c = rng.choice(texts)
        r = rng.randrange(len(tables[t]["data"]))
        tables[t]["data"][r][tables[t]["columns"].index(c)] = v = rng.choice(SAFE_TEXT)
        return doc, f"text-value {t}[{r}][{c}] = {v!r:.40}", True
    if op == "drop-table":
        del tables[key]
        doc["metadata"]["contents"] = [c for c in doc["metadata"]["contents"] if c["key"] != key]
        return doc, f"drop-table {key}", key != "items"
    if op == "move-table":
        doc["tables"] = {key: tables.pop(key), **tables}
        return doc, f"move-table {key} first", True
    if op == "metadata":
        field = rng.choice(["timestamp", "database_name", "database_host", "server_version", "tool_version"])
        if field == "timestamp":
            doc["metadata"][field] = "2020-02-29T23:59:59.999Z"
        else:
            doc["metadata"][field] = rng.choice(["other", "ünï", "x\"; DROP TABLE y; --", ""])
        return doc, f"metadata {field}", True
    if op == "sequence" and doc["metadata"]["sequences"]:
        doc["metadata"]["sequences"][0]["last_value"] = n = rng.randint(1, 10 ** 6)
        doc["metadata"]["sequences"][0]["is_called"] = rng.random() < 0.5
        return doc, f"sequence -> {n}", True
    return doc, f"{op} (no-op)", True


# -- the test ----------------------------------------------------------------------------------------------------

def test_a_thousand_mutations_restore_exactly_or_are_refused_with_nothing_changed(seeded, tmp_path, capsys):
    rng = random.Random(SEED)
    # The base file, made deterministic: the database's random name and the backup's time replaced by fixed ones.
    doc0 = json.loads(seeded.text)
    stamp, name = doc0["metadata"]["timestamp"], doc0["metadata"]["database_name"]
    doc0["metadata"].update(timestamp="2025-01-01T00:00:00.000Z", database_name="fuzz_base")
    text = seeded.text.replace(stamp, "2025-01-01T00:00:00.000Z", 1).replace(name, "fuzz_base", 1).encode()
    assert json.loads(text) == doc0
    original = gz(text)
    types = {k: dict(zip(t["columns"], t["column_types"])) for k, t in doc0["tables"].items()}
    assert set(types) == set(TABLES)
    judge = Judge(seeded.url, types)
    # The judge itself can tell: one changed value, one extra row, a sequence moved: each is seen.
    for change in ("UPDATE items SET price = price + 0.01 WHERE id = 4", "INSERT INTO y VALUES ('keep me')",
                   "UPDATE items SET created = created + interval '1 microsecond' WHERE id = 1",
                   "SELECT setval('logs_id_seq', 7)"):
        run_sql(seeded.url, change)
        assert judge.mismatch(doc0) is not None, change
        restore_backup(seeded.backup, database_url=seeded.url, show_diff=False)
    assert judge.mismatch(doc0) is None
    path = tmp_path / "backup_20250101_000000.backup.gz"
    failures: list[str] = []
    stats: Counter = Counter()
    started = time.monotonic()

    def unchanged(label: str) -> bool:
        if snapshot(seeded.url) == seeded.before:
            return True
        failures.append(f"{label}: the database changed")
        restore_backup(seeded.backup, database_url=seeded.url, show_diff=False)
        return False

    def attempt(label: str, data: bytes, must_accept: bool, sidecar: bool = False) -> None:
        path.write_bytes(data)
        side = path.with_name(path.name + ".sha256")
        side.unlink(missing_ok=True)
        if sidecar:  # as `sha256sum FILE > FILE.sha256` would: the restore then trusts the bytes as its own
            side.write_text(f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")
            label = label.replace(":", " +sha256:", 1)
        outcome = {}
        for mode in ("dry-run", "real"):
            try:
                restore_backup(path, database_url=seeded.url, dry_run=(mode == "dry-run"))
                outcome[mode] = "ok"
            except BackupError as exc:
                outcome[mode] = f"{type(exc).__name__}: {exc.message}"
            except Exception as exc:  # noqa: BLE001 - the point: nothing but a BackupError may escape
                outcome[mode] = "crash"
                failures.append(f"{label} [{mode}]: {type(exc).__name__}: {exc!s:.300}")
            if mode == "dry-run" or outcome[mode] != "ok":
                unchanged(f"{label} [{mode}: {outcome[mode]:.120}]")
        stats[f"{label.split(':')[0].replace(' +sha256', '')} " + ("restored" if outcome["real"] == "ok"
                                           else f"refused ({outcome['real'].split(':')[0]})")] += 1
        if outcome["real"] == "ok":
            try:
                problem = judge.mismatch(parse_independently(data))
            except (KeyError, TypeError, IndexError, AttributeError) as exc:
                problem = f"the file is not a readable document of tables ({type(exc).__name__}: {exc})"
            if problem:
                failures.append(f"{label}: restored but not exactly: {problem}")
            if outcome["dry-run"] != "ok":
                failures.append(f"{label}: the dry run refused ({outcome['dry-run']:.150}) what the restore took")
            restore_backup(seeded.backup, database_url=seeded.url, show_diff=False)
            unchanged(f"{label} (putting the baseline back)")
        elif must_accept:
            failures.append(f"{label}: a valid, restorable file was refused: {outcome['real']:.200}")

    for i in range(BYTE_MUTATIONS):
        if i % 2 == 0:
            data, what = mutate_bytes(rng, original)
            attempt(f"gzip-bytes: #{i} {what}", data, False)
        elif i % 4 == 1:
            mutated, what = mutate_bytes(rng, text)
            attempt(f"text-bytes: #{i} {what}", gz(mutated), False, sidecar=rng.random() < 0.5)
        else:
            mutated, what = mutate_lines(rng, text)
            attempt(f"text-lines: #{i} {what}", gz(mutated), False, sidecar=rng.random() < 0.5)
    for i in range(JSON_MUTATIONS):
        mutated, what, must_accept = mutate_json(rng, doc0)
        own = layout_dump(mutated) if rng.random() < 0.5 else None
        label = f"json-{'layout' if own else 'generic'}: #{i} {what}"
        attempt(label, gz(own if own is not None else json.dumps(mutated)), must_accept,
                sidecar=own is not None and rng.random() < 0.5)
    judge.close()

    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(f"\nfuzz: {BYTE_MUTATIONS + JSON_MUTATIONS} mutations in {elapsed:.1f} s: "
              + ", ".join(f"{k} {v}" for k, v in sorted(stats.items())))
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:40])
    restored = sum(v for k, v in stats.items() if k.endswith("restored"))
    refused = sum(v for k, v in stats.items() if "refused" in k)
    assert restored >= 150 and refused >= 300, stats  # the fuzz exercised both outcomes, not just one


def test_a_hand_edited_file_with_a_recomputed_checksum_restores_what_its_json_says(seeded, tmp_path):
    """A file whose bytes match its sidecar skips row parsing (it is taken to be the tool's own canonical lines).
    Edited by hand and given a new sidecar (`sha256sum`), it must still restore what its JSON says: `\\u0041` is
    "A", a space after a comma is not part of the next value, `\\/` is "/", and a wrong row is refused."""
    edits = [('[2,"red"]', '[2, "\\u0041\\u00e9"]'), ('[1,"log 1",1]', '[1,"log\\/1" , 1]'),
             ('["keep me"]', '[ "keep me\\t" ]')]
    text = seeded.text
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "backup_20250101_000000.backup.gz"
    path.write_bytes(gz(text))
    path.with_name(path.name + ".sha256").write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  x\n")
    doc = json.loads(text)
    judge = Judge(seeded.url, {k: dict(zip(t["columns"], t["column_types"])) for k, t in doc["tables"].items()})
    try:
        restore_backup(path, database_url=seeded.url)
        assert judge.mismatch(doc) is None
        assert judge.conn.cursor() and query(seeded.url, "SELECT tag FROM tags WHERE item_id = 2")[0][0] == "Aé"

        path.write_bytes(gz(text.replace('[1,"blue"]', '[1,"blue",3]')))  # one value too many
        path.with_name(path.name + ".sha256").write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  x\n")
        with pytest.raises(BackupError):
            restore_backup(path, database_url=seeded.url)
        assert judge.mismatch(doc) is None  # unchanged since the previous restore
    finally:
        judge.close()
        restore_backup(seeded.backup, database_url=seeded.url, show_diff=False)


