"""calculate_diff: what a restore of the backup would change, per table.

Row counts come from one pass over the file. With detailed=True every table that has a primary key and the same
columns in both places is compared row by row: the file and the database are read at the same time, each row
reduced to a (key hash, row hash) pair in a temporary table (server-side, so client memory stays bounded); tables
whose pairs add up differently on the two sides are joined by the server: rows to insert, to delete and to
change. The transaction is rolled back at the end, so nothing persists.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from ..archive.reader import BackupReader, Contents, read_contents_fast, scan
from ..checksum import check_recorded
from ..errors import DatabaseError, IntegrityError, InvalidBackupError
from ..models import FORMAT_NAME, DiffSummary, TableDiff
from ..pg.catalog import Table, read_catalog, read_migration_version
from ..pg.connection import connection, pg_error_message, privilege_hint
from ..archive.copytext import encode_rows
from ..pg.copy_in import TableLoad, run_copy_pipeline
from ..pg.copy_out import copy_out_select, read_tables
from ..memory import pin_mmap_threshold
from ..progress import Progress, ProgressFn, Throttle
from ..settings import get_settings


def calculate_diff(backup_path: Path, *, database_url: str | None = None, detailed: bool = True,
                   progress: ProgressFn | None = None, tables: list[str] | None = None) -> DiffSummary:
    pin_mmap_threshold()
    settings = get_settings()
    url = database_url or settings.database_url
    path = Path(backup_path)
    report = Throttle(progress)
    selected = set(tables) if tables else None

    with connection(url) as conn:
        # One snapshot for the counts and the rows, exported to the process that reads the rows (pg/copy_out.py).
        conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ)
        cur = conn.cursor()
        try:
            catalog = read_catalog(cur)
            current_version = read_migration_version(cur, catalog.alembic)
            current = _count_rows(cur, catalog.tables)
            db_tables = catalog.by_key()
            if detailed:
                contents, details = _detailed(cur, url, path, db_tables, selected, settings.BACKUP_MAX_LINE_BYTES, report)
            else:
                def on_progress(reader, header, rows):
                    report(Progress("diff", header.key, rows, None, reader.compressed_done, reader.compressed_size))

                contents = scan(path, settings.BACKUP_MAX_LINE_BYTES, on_progress, parse_rows=False)
                details = {}
        except psycopg2.Error as exc:
            raise DatabaseError(f"diff failed: {pg_error_message(exc)}", hint=privilege_hint(exc)) from None
        # connection() rolls back on exit (temp tables go with it), tolerating a connection already broken.
    report.flush()

    result: dict[str, TableDiff] = {}
    for header in contents.tables:
        if selected is not None and header.key not in selected:
            continue
        table = db_tables.get(header.key)
        cur_rows = current.get(header.key, 0)
        d = details.get(header.key)
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
    return DiffSummary(
        tables=result, total_current_rows=total_current, total_backup_rows=total_backup,
        total_diff=total_backup - total_current, backup_name=path.name,
        backup_timestamp=contents.metadata.timestamp, backup_migration_version=contents.metadata.migration_version,
        backup_database_name=contents.metadata.database_name,
        current_migration_version=current_version,
    )


def _count_rows(cur, tables: list[Table]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for start in range(0, len(tables), 200):
        chunk = tables[start:start + 200]
        cur.execute(sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}::int, count(*) FROM ONLY {}").format(sql.Literal(i), t.ident)
            for i, t in enumerate(chunk)))
        for i, n in cur.fetchall():
            counts[chunk[i].key] = int(n)
    return counts


def _comparable(header, table: Table | None) -> bool:
    if table is None or not table.primary_key:
        return False
    cols = {c.name: c for c in table.data_columns}
    if set(header.columns) != set(cols) or not set(table.primary_key) <= set(header.columns):
        return False
    if header.column_types is not None:
        return all(cols[n].type_name == t for n, t in zip(header.columns, header.column_types))
    return True


_MASK = (1 << 64) - 1


class _RowKeys:
    """How a table's rows are fingerprinted: (key hash, row hash) per row, from the row's COPY text line.

    Both sides have the same bytes for the same row: the database's rows as COPY TO writes them (pg/copy_out.py),
    and the file's JSON lines turned into COPY text, which gives exactly those bytes (archive/rowjson.py; tested
    against the server's own output). Hashing a line is one C call; the values are never built as Python objects.
    A key is the text of its columns: a raw tab never occurs inside a COPY text field."""

    def __init__(self, columns: list[str], pk_index: list[int]):
        self.whole = pk_index == list(range(len(columns)))  # the key is the row
        self.first = pk_index == [0]  # the usual case: a one-column key in front
        self._key_of = itemgetter(*pk_index)

    def fingerprints(self, text: bytes, tag: int, totals: list[int]) -> bytes:
        """COPY binary rows (tag, key hash, row hash) for COPY text lines (each ending in a newline).
        Adds the rows' count and the sums of their key and row hashes to `totals`."""
        if not text:
            return b""
        lines = text.split(b"\n")
        lines.pop()  # after the last newline
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


def _binary_rows(tag: int, keys: array, hashes: array) -> bytes:
    if sys.byteorder == "little":
        keys.byteswap()
        hashes.byteswap()
    kb, hb = keys.tobytes(), hashes.tobytes()
    row = b"".join((b"\x00\x03", b"\x00\x00\x00\x04", tag.to_bytes(4, "big"), b"\x00\x00\x00\x08", bytes(8),
                    b"\x00\x00\x00\x08", bytes(8)))
    out = bytearray(row * len(keys))
    for j in range(8):
        out[14 + j::_ROW_SIZE] = kb[j::8]
        out[26 + j::_ROW_SIZE] = hb[j::8]
    return bytes(out)


class _InOrder:
    """One table's rows from both sides (0: the file, 1: the database), paired off while they come in one order.

    Right after a backup, or after a restore (COPY appends rows in the file's order), a sequential scan returns a
    table's rows in the order the file holds them. Byte-equal runs of whole lines are equal rows on both sides:
    they are dropped in pairs, which leaves the diff's counts as they are, for the price of a memcmp instead of
    two hashes a row. From the first difference on, the rest of both sides is fingerprinted and left to the sums
    and, if they differ, the server's join. Memory: the caller reads the database side up to the file side's
    length, so at most about a block of each side is held."""

    def __init__(self, keys: _RowKeys, tag: int, file_totals: list[int], db_totals: list[int]):
        self._keys, self._tag = keys, tag
        self._totals = (file_totals, db_totals)
        self._pending = [b"", b""]  # whole lines of each side not paired yet (one of the two is always empty)
        self.ended = [False, False]
        self.in_order = True
        self.read = [0, 0]  # bytes added per side

    def wants_database(self) -> bool:
        return not self.ended[1] and self.read[1] < self.read[0]

    def add(self, side: int, text: bytes) -> bytes:
        """Rows of one side (COPY text lines); returns the fingerprint rows to load, if any."""
        self.read[side] += len(text)
        if not self.in_order or self.ended[1 - side]:
            return self._fingerprints(side, text)
        pending = self._pending
        mine = pending[side] + text if pending[side] else text
        theirs = pending[1 - side]
        n = min(len(mine), len(theirs))
        # Both hold whole lines: if the longer starts with the shorter, the cut is at a line boundary in both.
        if mine[:n] == theirs[:n]:
            pending[side], pending[1 - side] = mine[n:], theirs[n:]
            return b""
        # The first line that differs: the lines before it are paired off, the rest is fingerprinted.
        lines_mine, lines_theirs = mine.split(b"\n"), theirs.split(b"\n")
        same = next((j for j, (a, b) in enumerate(zip(lines_mine, lines_theirs)) if a != b), 0)
        self.in_order = False
        self._pending = [b"", b""]
        return (self._fingerprints(side, b"\n".join(lines_mine[same:]))
                + self._fingerprints(1 - side, b"\n".join(lines_theirs[same:])))

    def end(self, side: int) -> bytes:
        """One side has no more rows: the other side's unpaired rows never will be paired."""
        self.ended[side] = True
        other, self._pending[1 - side] = self._pending[1 - side], b""
        return self._fingerprints(1 - side, other)

    def _fingerprints(self, side: int, text: bytes) -> bytes:
        return self._keys.fingerprints(text, self._tag + side, self._totals[side])


def _no_rows() -> Iterator[tuple[int, bytes | None]]:
    yield from ()


def _database_block(pairs: _InOrder, database: _DatabaseRows) -> bytes:
    text = database.next()
    return pairs.end(1) if text is None else pairs.add(1, text)


class _DatabaseRows:
    """The database's COPY text (pg/copy_out.read_tables), table by table in the order of the file's table list.

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


_TEMP = sql.Identifier("backup_tasks_diff")


def _detailed(cur, url: str, path: Path, db_tables: dict[str, Table], selected, max_line: int,
              report: Throttle) -> tuple[Contents, dict[str, tuple[int, int, int]]]:
    """Row-level diff in bounded memory.

    Both sides are read at the same time as COPY text, table by table: the file's JSON lines converted (as for a
    restore), the database's rows as a child process reads them in this transaction's snapshot (pg/copy_out.py),
    so the server's and the child's work overlap the file's decoding, and no Python objects are made for values.
    Rows that come in the same order on both sides are paired off by comparing bytes (_InOrder); the others are
    reduced to (key hash, row hash) pairs, which go through one COPY into one temporary table. A table whose two
    sides have the same row count and the same sums of key and row hashes holds the same rows (up to a 2^-64
    chance); only the others are joined by the server: rows to insert, to delete and to change. The transaction
    is rolled back at the end."""
    contents = read_contents_fast(path, max_line) or scan(path, max_line)
    compared: list[tuple[str, Table, list[str], _RowKeys]] = []
    for header in contents.tables:
        table = db_tables.get(header.key)
        if (selected is None or header.key in selected) and _comparable(header, table):
            compared.append((header.key, table, header.columns,
                             _RowKeys(header.columns, [header.columns.index(c) for c in table.primary_key])))
    index_of = {key: i for i, (key, _, _, _) in enumerate(compared)}
    # Per table and side (tag = 2 * table index + side): [rows, sum of key hashes, sum of row hashes].
    totals = [[0, 0, 0] for _ in range(2 * len(compared))]
    # A file that matches the SHA-256 recorded when backup_tasks wrote it holds its lines exactly as written:
    # they become COPY text in bulk, as for a restore, after a check of their shape (0.16 s for the checksum of
    # the 126 MB file of 3 M rows). Any other file is parsed and its rows written again the canonical way.
    trusted = _matches_recorded_checksum(path) and contents.metadata.format == FORMAT_NAME
    result: list[Contents] = []

    def chunks() -> Iterator[tuple[bytes, Any]]:
        yield _BINARY_HEADER, None
        stream = read_tables(url, statements, snapshot) if compared else _no_rows()
        database = _DatabaseRows(stream)
        try:
            headers = []
            with BackupReader(path, max_line, parse_rows=not trusted) as reader:
                total = reader.compressed_size
                for table_rows in reader.tables():
                    header = table_rows.header
                    headers.append(header)
                    i = index_of.get(header.key)
                    if i is None or header.columns != compared[i][2]:
                        if i is not None:
                            raise InvalidBackupError(f"{path.name}: table {header.key!r} has other columns than "
                                                     "its metadata lists")
                        for _ in table_rows.batches():
                            pass  # counted and checked by the reader
                        continue
                    for j, text in database.skip_to(i):
                        yield compared[j][3].fingerprints(text, 2 * j + 1, totals[2 * j + 1]), None
                    pairs = _InOrder(compared[i][3], 2 * i, totals[2 * i], totals[2 * i + 1])
                    if not database.open:
                        pairs.end(1)
                    width, rows = len(header.columns), 0
                    for batch in table_rows.batches():
                        rows += len(batch)
                        yield pairs.add(0, encode_rows(batch, width)), Progress(
                            "diff", header.key, rows, None, reader.compressed_done, total)
                        while pairs.wants_database():
                            yield _database_block(pairs, database), None
                    yield pairs.end(0), None
                    while not pairs.ended[1]:
                        yield _database_block(pairs, database), None
                result.append(Contents(reader.metadata, headers, reader.src.uncompressed))
            for j, text in database.skip_to(len(compared)):  # tables the file's list names but its data lacks
                yield compared[j][3].fingerprints(text, 2 * j + 1, totals[2 * j + 1]), None
            if next(stream, None) is not None:
                raise DatabaseError("reading rows failed: the database's rows went on after the last table")
            yield _BINARY_TRAILER, None
        finally:
            stream.close()  # stopped early: the reading child goes too

    def on_chunk(mark) -> None:
        if mark is not None:
            report(mark)

    # Statements run before the COPY, in this thread (the producer threads must not run any: it would interrupt
    # the COPY in progress).
    statements = [copy_out_select(table, columns).as_string(cur) for _, table, columns, _ in compared]
    cur.execute("SELECT pg_export_snapshot()")
    snapshot = cur.fetchone()[0]
    cur.execute(sql.SQL("CREATE TEMP TABLE {} (t int, k bigint, h bigint) ON COMMIT DROP").format(_TEMP))
    load = TableLoad("diff", sql.SQL("COPY {} FROM STDIN WITH (FORMAT binary)").format(_TEMP))
    run_copy_pipeline(cur, iter([(load, chunks())]), on_chunk=on_chunk)
    contents = result[0]

    differing = [i for i in range(len(compared)) if totals[2 * i] != totals[2 * i + 1]]
    counts = _compare(cur, differing)
    return contents, {key: counts.get(i, (0, 0, 0)) for i, (key, _, _, _) in enumerate(compared)}


def _matches_recorded_checksum(path: Path) -> bool:
    """A mismatch is no error here: the diff only reports (a restore refuses such a file)."""
    try:
        return check_recorded(path) is not None
    except IntegrityError:
        return False


def _compare(cur, tables: list[int]) -> dict[int, tuple[int, int, int]]:
    """(to insert, to delete, to change) for each table index, joining the file's rows (even tags) with the
    database's (odd tags) on the key hash."""
    if not tables:
        return {}
    # Statistics make the planner choose a hash join: without them it guesses billions of rows and sorts both
    # sides for a merge join (measured 2.6 s against 1.5 s + 0.2 s for ANALYZE at 2 M rows).
    cur.execute(sql.SQL("ANALYZE {}").format(_TEMP))
    tags = [2 * i for i in tables]
    cur.execute(sql.SQL(
        "SELECT coalesce(b.t, c.t) / 2, count(*) FILTER (WHERE c.k IS NULL), count(*) FILTER (WHERE b.k IS NULL), "
        "count(*) FILTER (WHERE b.h <> c.h) "
        "FROM (SELECT t, k, h FROM {0} WHERE t = ANY(%s)) b "
        "FULL JOIN (SELECT t - 1 AS t, k, h FROM {0} WHERE t - 1 = ANY(%s)) c ON b.t = c.t AND b.k = c.k "
        "GROUP BY 1").format(_TEMP), (tags, tags))
    return {int(i): (int(ins), int(dele), int(chg)) for i, ins, dele, chg in cur.fetchall()}
