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
from operator import itemgetter
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
import psycopg2
from psycopg2 import sql

from ..archive.reader import BackupReader, Contents, RawBlock, read_contents_fast, scan
from ..archive.rowjson import dump_rows
from ..checksum import check_recorded
from ..errors import DatabaseError, IntegrityError, InvalidBackupError
from ..models import FORMAT_NAME, DiffSummary, TableDiff
from ..pg.catalog import Table, read_catalog, read_migration_version
from ..pg.connection import connection, pg_error_message, privilege_hint
from ..pg.copy_in import TableLoad, run_copy_pipeline
from ..pg.handoff import Handoff
from ..pg.snapshot import END, iter_table_batches
from ..progress import Progress, ProgressFn, Throttle
from ..pg.memory import pin_mmap_threshold
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


# Integer types (int2, int4, int8): written as bare JSON numbers, so a key made of them cannot hold a comma.
_INTEGER_OIDS = frozenset({20, 21, 23})
_MASK = (1 << 64) - 1


class _RowKeys:
    """How a table's rows are fingerprinted: (key hash, row hash) per row.

    The row hash is the hash of the row's JSON line. Both sides have the same bytes for the same row: the file's
    lines as backup_tasks wrote them (or the parsed rows written again the same way), and the database's rows
    encoded exactly as a backup encodes them (archive/rowjson.dump_rows). Hashing a line is one C call; hashing
    the row's values needed the values (a JSON parse of the file) and a tuple per row.

    The key: when the primary key is made of integer columns at the start of the row, as usual, its text is
    taken from the start of each line (integers hold no comma); otherwise the values are needed."""

    def __init__(self, table: Table, columns: list[str], pk_index: list[int]):
        types = {c.name: c.type_oid for c in table.columns}
        self.k = len(pk_index)
        self.width = len(columns)
        self.prefix = (pk_index == list(range(self.k)) and all(types[columns[i]] in _INTEGER_OIDS for i in pk_index))
        self._key_of = itemgetter(*pk_index)

    def fingerprints(self, block: bytes, rows: list | None, tag: int, totals: list[int]) -> bytes:
        """COPY binary rows (tag, key hash, row hash) for a block of row lines (`[..],\\n[..]`, canonical);
        `rows`: the same rows as values, if at hand (else parsed from the block when the key needs them).
        Adds the rows' count and the sums of their key and row hashes to `totals`."""
        if not block:
            return b""
        lines = block.split(b",\n")  # a raw newline never occurs inside a JSON string
        if self.prefix:
            # Measured per row on the benchmark's mixed table: 115 ns, where a regex over the block took 2.7 µs.
            k = self.k
            try:
                if self.width == k:
                    keys = [line[1:-1] for line in lines]
                elif k == 1:
                    keys = [line[1:line.index(b",")] for line in lines]
                else:
                    keys = [tuple(line[1:].split(b",", k)[:k]) for line in lines]
            except ValueError:  # a line without the comma after its key: not a row of this table's width
                raise InvalidBackupError("a row has fewer values than the table has columns") from None
        else:
            if rows is None:
                try:
                    rows = orjson.loads(b"[" + block + b"]")
                except orjson.JSONDecodeError as exc:
                    raise InvalidBackupError(f"invalid JSON in the rows ({exc})") from None
            keys = map(self._key_of, rows)
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


_TEMP = sql.Identifier("backup_tasks_diff")


def _detailed(cur, url: str, path: Path, db_tables: dict[str, Table], selected, max_line: int,
              report: Throttle) -> tuple[Contents, dict[str, tuple[int, int, int]]]:
    """Row-level diff in bounded memory.

    Both sides are reduced to (key hash, row hash) pairs at the same time, in two threads: the file's in one,
    the database's (read on a second connection, as a backup reads it) in the other, so the server's work for
    the read overlaps the file's parsing (the Python work of both sides still shares one interpreter).
    The pairs go through one COPY into one temporary table. A table whose two sides have the same row count and
    the same sums of key and row hashes holds the same rows (up to a 2^-64 chance); only the others are joined
    by the server: rows to insert, to delete and to change. The transaction is rolled back at the end."""
    contents = read_contents_fast(path, max_line) or scan(path, max_line)
    compared: list[tuple[str, Table, list[str], _RowKeys]] = []
    for header in contents.tables:
        table = db_tables.get(header.key)
        if (selected is None or header.key in selected) and _comparable(header, table):
            compared.append((header.key, table, header.columns,
                             _RowKeys(table, header.columns, [header.columns.index(c) for c in table.primary_key])))
    index_of = {key: i for i, (key, _, _, _) in enumerate(compared)}
    # Per table and side (tag = 2 * table index + side): [rows, sum of key hashes, sum of row hashes].
    totals = [[0, 0, 0] for _ in range(2 * len(compared))]
    # A file that matches the SHA-256 recorded when backup_tasks wrote it holds its lines exactly as written:
    # they are hashed as they are (0.16 s for the checksum of the 126 MB file of 3 M rows). Any other file is
    # parsed and its rows written again the canonical way.
    trusted = _matches_recorded_checksum(path) and contents.metadata.format == FORMAT_NAME
    result: list[Contents] = []

    def file_side(put) -> None:
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
                keys, side = compared[i][3], totals[2 * i]
                rows = 0
                for batch in table_rows.batches():
                    rows += len(batch)
                    if isinstance(batch, RawBlock):
                        data = keys.fingerprints(batch.raw, None, 2 * i, side)
                    else:
                        data = keys.fingerprints(dump_rows(batch), batch, 2 * i, side)
                    mark = Progress("diff", header.key, rows, None, reader.compressed_done, total)
                    if not put(data, mark):
                        return
            result.append(Contents(reader.metadata, headers, reader.src.uncompressed))

    def database_side(put) -> None:
        if not compared:
            return
        with connection(url) as reader_conn:
            reader_conn.set_session(readonly=True)
            batches = iter_table_batches(reader_conn, [t for _, t, _, _ in compared],
                                         columns=[cols for _, _, cols, _ in compared])
            try:
                for i, batch in batches:
                    if batch is not END:
                        keys = compared[i][3]
                        if not put(keys.fingerprints(dump_rows(batch), batch, 2 * i + 1, totals[2 * i + 1]), None):
                            return
            finally:
                batches.close()

    def chunks() -> Iterator[tuple[bytes, Any]]:
        yield _BINARY_HEADER, None
        yield from _merged([file_side, database_side])
        yield _BINARY_TRAILER, None

    def on_chunk(mark) -> None:
        if mark is not None:
            report(mark)

    # Created before the COPY, in this thread (the producer threads must not run statements: it would interrupt
    # the COPY in progress).
    cur.execute(sql.SQL("CREATE TEMP TABLE {} (t int, k bigint, h bigint) ON COMMIT DROP").format(_TEMP))
    load = TableLoad("diff", sql.SQL("COPY {} FROM STDIN WITH (FORMAT binary)").format(_TEMP))
    run_copy_pipeline(cur, iter([(load, chunks())]), on_chunk=on_chunk)
    contents = result[0]

    differing = [i for i in range(len(compared)) if totals[2 * i] != totals[2 * i + 1]]
    counts = _compare(cur, differing)
    return contents, {key: counts.get(i, (0, 0, 0)) for i, (key, _, _, _) in enumerate(compared)}


def _merged(producers: list[Callable[[Callable[[bytes, Any], bool]], None]]) -> Iterator[tuple[bytes, Any]]:
    """Run each producer in its own thread and yield what they put, interleaved, until all have finished.

    A producer calls put(data, mark), which returns False once the consumer has stopped (an error on either side,
    Ctrl-C): the producer then returns. The first error of a producer is raised here."""
    handoff = Handoff(maxsize=4)  # bounded: a few blocks in flight
    done = object()

    def run(produce) -> None:
        try:
            produce(lambda data, mark: handoff.put((data, mark)))
            handoff.put(done)
        except BaseException as exc:  # raised in the consumer's thread
            handoff.put(exc)

    for produce in producers:
        handoff.start(lambda produce=produce: run(produce), f"diff-{produce.__name__}")
    try:
        running = len(producers)
        while running:
            item = handoff.get()
            if item is done:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            elif item[0]:
                yield item
    finally:
        handoff.close()


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
