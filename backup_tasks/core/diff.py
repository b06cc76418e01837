"""calculate_diff: what a restore of the backup would change, per table (and for the large objects).

Counts: the backup's row counts from its manifest (or one pass over the file), the database's by count(*), in one
snapshot. Detailed (the default): every table that has a primary key and the same columns in both places is
compared row by row in bounded memory (_DetailedDiff): the database's rows are read as the backup's own JSON lines
(core/json_rows.py), so rows equal on both sides are paired off by comparing the file's bytes with them; the others
are turned into COPY text and reduced to (key hash, row hash) fingerprints that the server joins: rows to insert,
to delete and to change. The statements are pg/diff_ops.py's; the transaction is rolled back at the end.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

from ..archive.copytext import canonical_lines, encode_rows
from ..archive.reader import LARGE_OBJECTS, BackupReader, Contents, RawBlock, TableHeader
from ..archive.rowjson import lines_to_copy_text
from ..errors import DatabaseError, InvalidBackupError
from ..memory import pin_mmap_threshold
from ..models import DiffSummary, TableDiff
from ..pg.catalog import Catalog, Table
from ..pg.copy_in import run_copy_pipeline
from ..pg.diff_ops import DiffSession, diff_session
from ..progress import Progress, ProgressFn, Throttle
from .json_rows import LINE_END, read_json_rows
from .options import EngineOptions
from .source import BackupSource, open_source


def calculate_diff(backup_path: Path, *, database_url: str, detailed: bool = True,
                   progress: ProgressFn | None = None, tables: list[str] | None = None,
                   options: EngineOptions = EngineOptions(), source: BackupSource | None = None,
                   large_objects: bool | None = None, keyless: bool = False) -> DiffSummary:
    """What restoring the backup into `database_url` would change. `source` (an open_source() of the same file)
    spares a second checksum pass; large_objects: count them too (default: unless `tables` selects tables).
    keyless: compare tables without a primary key too, as multisets of whole rows (a restore drill's proof; a
    changed row then counts as one to insert and one to delete)."""
    pin_mmap_threshold()
    source = source or open_source(Path(backup_path), options.max_line_bytes, refuse_mismatch=False,
                                   keys=options.keys)
    selected = set(tables) if tables else None
    report = Throttle(progress)
    with diff_session(database_url) as db:
        current = db.row_counts(db.catalog.tables)
        objects_now = db.large_objects()
        if detailed:
            contents, details, objects = _DetailedDiff(db, database_url, source, selected, options, report,
                                                       keyless).run()
        else:
            contents, details, objects = _counts(source, report), {}, None
    report.flush()
    counted = (tables is None) if large_objects is None else large_objects
    return _summary(source, db.catalog, db.migration_version, contents, current, details, selected, detailed,
                    _objects_diff(source, objects_now, objects) if counted else None)


def counts_summary(source: BackupSource, contents: Contents, catalog: Catalog, migration_version: str | None,
                   current: dict[str, int], objects_now: int, tables: list[str] | None) -> DiffSummary:
    """The seed's counts diff from counts taken elsewhere: a restore's preface, whose backup side is the rows it
    loaded and whose database side it counted in its own transaction before emptying the tables."""
    return _summary(source, catalog, migration_version, contents, current, {}, set(tables) if tables else None,
                    False, _objects_diff(source, objects_now, None) if tables is None else None)


def _counts(source: BackupSource, report: Throttle) -> Contents:
    if source.manifest is not None:
        return source.row_counts()
    from ..archive.reader import scan

    def on_progress(reader, header, rows) -> None:
        report(Progress("diff", header.key, rows, None, reader.compressed_done, reader.compressed_size))

    return scan(source.path, source.max_line, on_progress, parse_rows=False, keys=source.keys)


def _objects_diff(source: BackupSource, current: int, detail: tuple[int, int] | None) -> TableDiff | None:
    backup = source.contents.large_objects
    if not backup and not current:
        return None
    inserted, deleted = detail if detail is not None else (None, None)
    return TableDiff(current_rows=current, backup_rows=backup, diff=backup - current, to_insert=inserted,
                     to_delete=deleted, to_change=None)


def _summary(source: BackupSource, catalog: Catalog, migration_version: str | None, contents: Contents,
             current: dict[str, int], details: dict[str, tuple[int, int, int]], selected: set[str] | None,
             detailed: bool, objects: TableDiff | None) -> DiffSummary:
    db_tables = catalog.by_key()
    result: dict[str, TableDiff] = {}
    for header in contents.tables:
        if selected is not None and header.key not in selected:
            continue
        table = db_tables.get(header.key)
        cur_rows, d = current.get(header.key, 0), details.get(header.key)
        result[header.key] = TableDiff(
            current_rows=cur_rows, backup_rows=header.row_count or 0, diff=(header.row_count or 0) - cur_rows,
            has_primary_key=bool(table and table.primary_key), in_database=table is not None,
            to_insert=d[0] if d else None, to_delete=d[1] if d else None, to_change=d[2] if d else None,
        )
    if selected is None:
        in_backup = {t.key for t in contents.tables}
        for table in catalog.tables:
            if table.key not in in_backup:  # a restore empties it
                n = current.get(table.key, 0)
                result[table.key] = TableDiff(current_rows=n, backup_rows=0, diff=-n, in_backup=False,
                                              has_primary_key=bool(table.primary_key),
                                              to_insert=0 if detailed else None, to_delete=n if detailed else None,
                                              to_change=0 if detailed else None)
    total_current = sum(t.current_rows for t in result.values())
    total_backup = sum(t.backup_rows for t in result.values())
    meta = contents.metadata
    return DiffSummary(
        tables=result, total_current_rows=total_current, total_backup_rows=total_backup,
        total_diff=total_backup - total_current, backup_name=source.path.name, backup_timestamp=meta.timestamp,
        backup_migration_version=meta.migration_version, backup_database_name=meta.database_name,
        current_migration_version=migration_version, large_objects=objects,
    )


def _comparable(header, table: Table | None, keyless: bool = False) -> bool:
    if table is None or not (table.primary_key or keyless):
        return False
    cols = {c.name: c for c in table.data_columns}
    if set(header.columns) != set(cols) or not set(table.primary_key or ()) <= set(header.columns):
        return False
    if header.column_types is not None:
        return all(cols[n].type_name == t for n, t in zip(header.columns, header.column_types, strict=False))
    return True


_MASK = (1 << 64) - 1


class RowKeys:
    """How a table's rows are fingerprinted: (key hash, row hash) per row, from the row's COPY text line.

    Both sides have the same bytes for the same row: JSON lines turned into COPY text give exactly what COPY TO
    writes for the same values (archive/rowjson.py; tested against the server's own output), whichever JSON
    spelling a file holds. Hashing a line is one C call; the values are never built as Python objects.
    A key is the text of its columns: a raw tab never occurs inside a COPY text field."""

    def __init__(self, columns: list[str], pk_index: list[int]):
        self.whole = pk_index == list(range(len(columns)))  # the key is the row
        self.first = pk_index == [0]  # the usual case: a one-column key in front
        self._key_of = itemgetter(*pk_index) if pk_index else None  # a table of no columns: `whole`

    def fingerprints(self, text: bytes, tag: int, totals: list[int]) -> bytes:
        """COPY binary rows (tag, key hash, row hash) for COPY text lines (each ending in a newline).
        Adds the rows' count and the sums of their key and row hashes to `totals`."""
        if not text:
            return b""
        lines = text.split(b"\n")
        lines.pop()  # after the last newline
        return self.line_fingerprints(lines, tag, totals)

    def line_fingerprints(self, lines: list[bytes], tag: int, totals: list[int]) -> bytes:
        if not lines:
            return b""
        try:
            if self.whole:
                keys = lines
            elif self.first:
                # Measured per row on pgbench_accounts: 165-280 ns; a regex over the block took 240-900 ns.
                keys = [line[:line.index(b"\t")] for line in lines]
            else:
                keys = [self._key_of(line.split(b"\t")) for line in lines]
        except (ValueError, IndexError):  # a line without enough tabs: not a row of this table's width
            raise InvalidBackupError("a row has fewer values than the table has columns") from None
        key_hashes, row_hashes = array("q", map(hash, keys)), array("q", map(hash, lines))
        totals[0] += len(row_hashes)
        totals[1] = (totals[1] + sum(key_hashes)) & _MASK
        totals[2] = (totals[2] + sum(row_hashes)) & _MASK
        return _binary_rows(tag, key_hashes, row_hashes)


# COPY's binary format: a header, then per row the field count and each field's length and big-endian bytes, then
# -1. Interleaving the int64 arrays into that layout with strided slice assignments costs ~90 ns a row, against
# ~200 ns for formatting "%d\t%d" text (and the server parses no digits).
_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_BINARY_TRAILER = b"\xff\xff"
_ROW_SIZE = 2 + 4 + 4 + 4 + 8 + 4 + 8  # 3 fields: tag int4, key hash int8, row hash int8
LARGE_OBJECT_TAG = -2  # the file's large objects, by oid


def _binary_rows(tag: int, keys: array, hashes: array) -> bytes:
    if sys.byteorder == "little":
        keys.byteswap()
        hashes.byteswap()
    kb, hb = keys.tobytes(), hashes.tobytes()
    row = b"".join((b"\x00\x03", b"\x00\x00\x00\x04", tag.to_bytes(4, "big", signed=True), b"\x00\x00\x00\x08",
                    bytes(8), b"\x00\x00\x00\x08", bytes(8)))
    out = bytearray(row * len(keys))
    for j in range(8):
        out[14 + j::_ROW_SIZE] = kb[j::8]
        out[26 + j::_ROW_SIZE] = hb[j::8]
    return bytes(out)


# After a difference, a line is looked for this many lines ahead (lines as long as the two compared) on the other
# side: a row that an UPDATE moved within its page, or a run of rows one side lacks, is found again; farther than
# this, both lines go to the join. Never more than REACH_BYTES ahead: a table of rows of several MB looks at the
# next row or two, and holds no more than that.
LOOK_AHEAD = 64
REACH_BYTES = 1 << 20
# A table whose rows keep failing to pair (another physical order altogether: CLUSTER, VACUUM FULL) stops being
# paired once, of the last few MB compared, more than half went to the join: fingerprinting everything is cheaper
# than looking. The count decays (halved past 16 x this), so a table that changes order half-way is noticed.
GIVE_UP_BYTES = 1 << 20
# The first difference is searched by comparing 4 KiB, 8 KiB, ... at a time, then halving the range down to
# _FINE bytes, whose lines are compared one by one: one memcmp per step, and no line of the equal runs between two
# differences is ever split out. On 2 M pgbench_accounts-like lines with 1 % moved to the end and 0.1 % deleted
# (a difference every ~100 lines), pairing took 0.23-0.56 s, against 0.9-2.2 s splitting and walking every line of
# every 512 KiB block that held a difference (both sides fed to Pairing directly, the machine shared).
_FIRST_STEP = 4096
_FINE = 64


class Pairing:
    """One table's rows from both sides (0: the file, 1: the database), paired off where they are equal.

    Right after a backup, or after a restore (COPY appends rows in the file's order), a sequential scan returns a
    table's rows in the order the file holds them, and changes since then disturb that order only locally: an
    updated row leaves its place (and shows up later, usually at the end), a deleted one is gone, an inserted one
    appears. So both sides are compared by memcmp over ever longer stretches while they agree; where they do not,
    the first differing line is found (_common), and the difference resolved by looking a little ahead on either
    side (LOOK_AHEAD) for the line the other side has (_resolve); then back to long stretches. Only exactly equal
    lines (equal rows) are ever paired, and pairs leave the diff's counts as they are; every other line is
    fingerprinted, and the server's join decides what it is. Memory: the caller reads the database side while it
    holds less than the file side (wants_database), so at most about a block of each side is held, plus
    REACH_BYTES while a look ahead waits for a side's next rows."""

    def __init__(self, keys: RowKeys, tag: int, file_totals: list[int], db_totals: list[int],
                 to_copy: Callable[[int, bytes], bytes] | None = None):
        self._keys, self._tag = keys, tag
        # (side, lines) -> COPY text lines, for the lines that go to the join (None: they are COPY text already)
        self._to_copy = to_copy
        self._totals = (file_totals, db_totals)
        # Whole lines of each side not paired yet: buf[off:] (an offset, not a copy, as blocks are consumed).
        self._buf = [b"", b""]
        self._off = [0, 0]
        self._lost: tuple[list[bytes], list[bytes]] = ([], [])  # lines of each side that go to the join
        self.ended = [False, False]
        self.read = [0, 0]  # bytes added per side
        self._seen = self._unpaired = 0  # bytes compared, and how many of those went to the join (decaying)
        self.pairing = True

    def wants_database(self) -> bool:
        """The database's next rows are wanted: it holds fewer bytes not paired yet than the file does. Not "has
        sent fewer bytes": rows updated since the backup are missing from the database's side where the file has
        them (they come at the end), so by bytes sent it runs ahead by 1 % of the table for 1 % of rows changed,
        and that lead was held, and copied on every block, until the table's end."""
        if self.ended[1]:
            return False
        if not self.pairing:
            return self.read[1] < self.read[0]
        return self._left(1) < self._left(0)

    def add(self, side: int, text: bytes) -> bytes:
        """Whole lines of one side (the diff's: JSON lines, each ended by LINE_END; without `to_copy`: COPY text
        lines); returns the fingerprint rows to load, if any."""
        self.read[side] += len(text)
        if not self.pairing or (self.ended[1 - side] and not self._left(1 - side)):
            return self._fingerprint(side, text)
        if self._left(side):
            self._buf[side] = self._buf[side][self._off[side]:] + text
        else:
            self._buf[side] = text
        self._off[side] = 0
        return self._pair()

    def end(self, side: int) -> bytes:
        """One side has no more rows: what the other side holds or sends now can pair only with what this side
        still holds."""
        self.ended[side] = True
        out = self._pair() if self.pairing else b""
        return out + self._leftovers()

    def _left(self, side: int) -> int:
        return len(self._buf[side]) - self._off[side]

    def _take(self, side: int) -> bytes:
        text = self._buf[side][self._off[side]:] if self._off[side] else self._buf[side]
        self._buf[side], self._off[side] = b"", 0
        return text

    def _leftovers(self) -> bytes:
        out = []
        for side in (0, 1):
            if self.ended[1 - side] and not self._left(1 - side) and self._left(side):
                out.append(self._fingerprint(side, self._take(side)))
        return b"".join(out)

    def _pair(self) -> bytes:
        while self._left(0) and self._left(1):
            n = min(self._left(0), self._left(1))
            equal = self._common(n)
            self._paired(equal)
            if equal == n or not self._resolve():  # a side is used up, or must get more rows first
                break
            if self._seen >= GIVE_UP_BYTES and 2 * self._unpaired > self._seen:
                self.pairing = False  # another order altogether: everything goes to the join from here on
                break
        out = self._fingerprint_lost()
        if not self.pairing:
            out += self._fingerprint(0, self._take(0)) + self._fingerprint(1, self._take(1))
        return out + self._leftovers()

    def _common(self, n: int) -> int:
        """How many bytes of whole lines both sides have in front, the same, of the next n (n: all the same; the
        shorter side then ends at a line boundary of the longer). startswith at an offset copies only the slice
        it compares."""
        (a, b), (oa, ob) = self._buf, self._off
        lo, step = 0, _FIRST_STEP
        while lo < n:
            hi = min(lo + step, n)
            if not b.startswith(a[oa + lo:oa + hi], ob + lo):
                break
            lo, step = hi, 2 * step
        else:
            return n
        while hi - lo > _FINE:  # the same up to lo, a difference before hi
            mid = (lo + hi) // 2
            if b.startswith(a[oa + lo:oa + mid], ob + lo):
                lo = mid
            else:
                hi = mid
        end = a.rfind(b"\n", oa, oa + lo)
        return end + 1 - oa if end >= 0 else 0

    def _paired(self, n: int) -> None:
        self._off[0] += n
        self._off[1] += n
        self._count(n, 0)

    def _count(self, seen: int, unpaired: int) -> None:
        self._seen += seen
        self._unpaired += unpaired
        if self._seen > 16 * GIVE_UP_BYTES:
            self._seen //= 2
            self._unpaired //= 2

    def _resolve(self) -> bool:
        """Both sides are at the start of a line, a difference a few lines ahead: pair the equal lines before it,
        then resolve it: the line one side has is found a little further on the other side (the lines skipped
        there go to the join), or neither is (both go). False: the look ahead needs a side's next rows first."""
        (a, b), (oa, ob) = self._buf, self._off
        start = oa
        while True:
            ea, eb = a.index(b"\n", oa) + 1, b.index(b"\n", ob) + 1
            if ea - oa != eb - ob or not b.startswith(a[oa:ea], ob):
                break
            oa, ob = ea, eb
            if ea == len(a) or eb == len(b):
                self._paired(oa - start)
                return True
        self._paired(oa - start)
        line_a, line_b = a[oa:ea], b[ob:eb]
        reach = min(LOOK_AHEAD * max(len(line_a), len(line_b)), REACH_BYTES)
        found = a.find(b"\n" + line_b, ea - 1, ea + reach + len(line_b))
        if found >= 0:  # lines only the file has, then the database's line
            return self._skip(0, found + 1)
        found = b.find(b"\n" + line_a, eb - 1, eb + reach + len(line_a))
        if found >= 0:
            return self._skip(1, found + 1)
        if ((ea + reach + len(line_b) > len(a) and not self.ended[0])
                or (eb + reach + len(line_a) > len(b) and not self.ended[1])):
            return False  # the line may be just past the end of what a side holds
        self._lost[0].append(line_a)
        self._lost[1].append(line_b)
        self._off[0], self._off[1] = ea, eb
        self._count(max(len(line_a), len(line_b)), max(len(line_a), len(line_b)))
        return True

    def _skip(self, side: int, to: int) -> bool:
        lines = self._buf[side][self._off[side]:to]
        self._lost[side].append(lines)
        self._off[side] = to
        self._count(len(lines), len(lines))
        return True

    def _fingerprint_lost(self) -> bytes:
        out = b""
        for side in (0, 1):
            if self._lost[side]:
                out += self._fingerprint(side, b"".join(self._lost[side]))
                self._lost[side].clear()
        return out

    def _fingerprint(self, side: int, text: bytes) -> bytes:
        if self._to_copy is not None and text:
            text = self._to_copy(side, text)
        return self._keys.fingerprints(text, self._tag + side, self._totals[side])


def file_lines(batch: Any) -> bytes:
    """A batch of the file's rows as the JSON lines the backup wrote, each ended by LINE_END: a block read as it
    is (RawBlock), or the block the parsed rows came from when it is exactly what dump_rows writes, or the rows
    written again that way."""
    lines = batch.raw if isinstance(batch, RawBlock) else canonical_lines(batch)
    return lines + LINE_END if lines else b""


def copy_text_of(header: TableHeader) -> Callable[[int, bytes], bytes]:
    """How a table's unpaired JSON lines (each ended by LINE_END) become COPY text to be fingerprinted: the
    database's are dump_rows output, converted in bulk; the file's are first checked to have that shape, and
    parsed and checked like any file's rows when they do not (archive/copytext.encode_rows). Both sides then give
    the same COPY text for the same row, whatever JSON spelling the file holds."""
    width = len(header.columns)

    def to_copy(side: int, lines: bytes) -> bytes:
        body = lines[:-len(LINE_END)]
        if not width:
            return b"\n" * lines.count(b"\n")
        if side == 1:
            return lines_to_copy_text(body)
        return encode_rows(RawBlock(body, lines.count(b"\n"), header), width)

    return to_copy


def _no_rows() -> Iterator[tuple[int, bytes | None]]:
    yield from ()


class _DatabaseRows:
    """The database's rows as JSON lines (core/json_rows.py), table by table in the order of the file's table list.

    The file's rows normally come in that order too. When they do not (a table moved by hand), the tables passed
    over are handed out whole to be fingerprinted without pairing, and a table met again later has no rows left
    here: the file's side of it is fingerprinted alone. The server's join gives the same counts either way."""

    def __init__(self, stream: Iterator[tuple[int, bytes | None]]):
        self._stream = stream
        self._expected = 0
        self.open = False  # the current table's rows are still to come

    def skip_to(self, index: int) -> Iterator[tuple[int, bytes]]:
        """(table, rows) of the tables before `index` not read yet; then `index` is the current table, or, if it
        was read already, there is none (open is False)."""
        self.open = False
        while self._expected < index:
            while (text := self._read(self._expected)) is not None:
                yield self._expected, text
            self._expected += 1
        if index == self._expected:
            self._expected, self.open = index + 1, True

    def next(self) -> bytes | None:
        """The next block of the current table's rows; None once it has ended."""
        if not self.open:
            return None
        text = self._read(self._expected - 1)
        self.open = text is not None
        return text

    def _read(self, index: int) -> bytes | None:
        item = next(self._stream, None)
        if item is None or item[0] != index:
            raise DatabaseError("reading rows failed: the database's rows did not come table by table")
        return item[1]


class _DetailedDiff:
    """Row-level diff in bounded memory.

    Both sides are read at the same time as JSON lines, table by table: the file's as they are, the database's as
    a child process reads and encodes them the way the backup does, in this transaction's snapshot
    (core/json_rows.py), so the server's and the child's work overlap the file's decompression, and no Python
    objects are made for the file's values. Only lines left unpaired become COPY text.
    Rows are paired (Pairing); the others' fingerprints go through one binary COPY into one temporary table. A
    table whose two sides have the same row count and the same sums of key and row hashes holds the same rows (up
    to a 2^-64 chance); only the others are joined by the server. The file's large objects' oids go into the same
    table, to be compared with the database's."""

    def __init__(self, db: DiffSession, url: str, source: BackupSource, selected: set[str] | None,
                 options: EngineOptions, report: Throttle, keyless: bool = False):
        self.db, self.url, self.source, self.report = db, url, source, report
        self.max_line = options.max_line_bytes
        db_tables = db.catalog.by_key()
        self.compared: list[tuple[str, Table, list[str], RowKeys]] = []
        self.to_copy: list[Callable[[int, bytes], bytes]] = []  # per compared table: copy_text_of its header
        self.budget = options.batch_bytes  # the backup's: smaller fetches made the diff ~0.9 s slower at 3 M rows
        self.keyless: set[int] = set()  # tables compared by their whole rows (no primary key)
        for header in source.contents.tables:
            table = db_tables.get(header.key)
            if (selected is None or header.key in selected) and _comparable(header, table, keyless):
                key = table.primary_key or header.columns
                if not table.primary_key:
                    self.keyless.add(len(self.compared))
                self.compared.append((header.key, table, header.columns,
                                      RowKeys(header.columns, [header.columns.index(c) for c in key])))
                self.to_copy.append(copy_text_of(header))
        self.index_of = {key: i for i, (key, _, _, _) in enumerate(self.compared)}
        # Per table and side (tag = 2 * table index + side): [rows, sum of key hashes, sum of row hashes].
        self.totals = [[0, 0, 0] for _ in range(2 * len(self.compared))]
        self.contents: Contents | None = None
        self.file_objects = 0

    def run(self) -> tuple[Contents, dict[str, tuple[int, int, int]], tuple[int, int] | None]:
        # Statements run before the COPY, in this thread (the producer thread must not run any: it would interrupt
        # the COPY in progress).
        statements, small = self.db.select_statements([(table, columns) for _, table, columns, _ in self.compared],
                                                      self.budget)
        relations = self.db.relations([table for _, table, _, _ in self.compared])
        snapshot = self.db.export_snapshot()
        load = self.db.fingerprint_table()
        run_copy_pipeline(self.db.cur, iter([(load, self._chunks(statements, small, snapshot, relations))]),
                          on_chunk=lambda mark: mark is not None and self.report(mark))
        differing = [i for i in range(len(self.compared)) if self.totals[2 * i] != self.totals[2 * i + 1]]
        counts = self.db.join([i for i in differing if i not in self.keyless])
        counts.update(self.db.join_rows([i for i in differing if i in self.keyless]))
        details = {key: counts.get(i, (0, 0, 0)) for i, (key, _, _, _) in enumerate(self.compared)}
        objects = self.db.large_object_changes(LARGE_OBJECT_TAG) if self._knows_objects() else None
        return self.contents, details, objects

    def _knows_objects(self) -> bool:
        return bool(self.source.contents.large_objects) or self.file_objects > 0 or self.db.large_objects() > 0

    def _chunks(self, statements: list[str], small: list[bool], snapshot: str,
                relations: list[str]) -> Iterator[tuple[bytes, Any]]:
        """The producer: the fingerprint rows of both sides, as one binary COPY stream."""
        yield _BINARY_HEADER, None
        stream = (read_json_rows(self.url, statements, small, snapshot, self.budget, relations) if self.compared
                  else _no_rows())
        database = _DatabaseRows(stream)
        try:
            headers = []
            with BackupReader(self.source.path, self.max_line, parse_rows=not self.source.trusted,
                              keys=self.source.keys) as reader:
                for table_rows in reader.tables():
                    if table_rows.header.kind == LARGE_OBJECTS:
                        yield from self._objects(table_rows)
                        continue
                    headers.append(table_rows.header)
                    yield from self._table(table_rows, database, reader)
                self.contents = Contents(reader.metadata, headers, reader.src.uncompressed)
            for j, text in database.skip_to(len(self.compared)):  # tables the file's list names but its data lacks
                yield self._unpaired(j, text), None
            if next(stream, None) is not None:
                raise DatabaseError("reading rows failed: the database's rows went on after the last table")
            yield _BINARY_TRAILER, None
        finally:
            stream.close()  # stopped early: the reading child goes too

    def _table(self, table_rows, database: _DatabaseRows, reader: BackupReader) -> Iterator[tuple[bytes, Any]]:
        header = table_rows.header
        i = self.index_of.get(header.key)
        if i is None or header.columns != self.compared[i][2]:
            if i is not None:
                raise InvalidBackupError(f"{self.source.path.name}: table {header.key!r} has other columns than "
                                         "its metadata lists")
            for _ in table_rows.batches():
                pass  # counted and checked by the reader
            return
        keys = self.compared[i][3]
        for j, text in database.skip_to(i):
            yield self._unpaired(j, text), None
        pairs = Pairing(keys, 2 * i, self.totals[2 * i], self.totals[2 * i + 1], self.to_copy[i])
        if not database.open:
            yield pairs.end(1), None
        rows = 0
        for batch in table_rows.batches():
            rows += len(batch)
            yield pairs.add(0, file_lines(batch)), Progress(
                "diff", header.key, rows, None, reader.compressed_done, reader.compressed_size)
            while pairs.wants_database():
                yield self._database_block(pairs, database), None
        yield pairs.end(0), None
        while not pairs.ended[1]:
            yield self._database_block(pairs, database), None

    def _unpaired(self, j: int, text: bytes) -> bytes:
        """Fingerprints of the database's rows of table j, passed over without pairing."""
        return self.compared[j][3].fingerprints(self.to_copy[j](1, text), 2 * j + 1, self.totals[2 * j + 1])

    @staticmethod
    def _database_block(pairs: Pairing, database: _DatabaseRows) -> bytes:
        text = database.next()
        return pairs.end(1) if text is None else pairs.add(1, text)

    def _objects(self, table_rows) -> Iterator[tuple[bytes, Any]]:
        """The file's large objects, one fingerprint row each (its oid as the key) under LARGE_OBJECT_TAG."""
        for batch in table_rows.batches():
            oids = [row[0] for row in batch if row[2] == 0 and type(row[0]) is int]
            self.file_objects += len(oids)
            if oids:
                yield _binary_rows(LARGE_OBJECT_TAG, array("q", oids), array("q", [0] * len(oids))), None
