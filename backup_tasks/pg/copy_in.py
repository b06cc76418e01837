"""Loading rows with COPY FROM STDIN, fed by a producer thread.

The producer parses the backup and encodes CSV while psycopg2 sends the previous chunk with the GIL released,
so parsing and the server's work overlap. CSV is written by the csv module (C): strings are always quoted,
numbers and the NULL marker never are, so NULL and '' stay distinct.
"""

from __future__ import annotations

import csv
import io
import queue
import threading
from typing import Any, Callable, Iterable, Iterator

from psycopg2 import sql

from ..errors import InvalidBackupError

CHUNK_BYTES = 1 << 20


class _Null:
    """Written unquoted as \\N by csv.QUOTE_NONNUMERIC (it counts as a number), which COPY reads as NULL."""

    __slots__ = ()

    def __index__(self) -> int:
        return 0

    def __str__(self) -> str:
        return "\\N"


NULL = _Null()
_NoneType = type(None)

# What a value in the file may be, by the kind of column it goes to. The writer stores booleans as JSON
# booleans, integers as JSON integers, text as strings and every other type as PostgreSQL's text form;
# numbers are accepted for other types so files written by other implementations of the seed still load.
KIND_BOOL = frozenset({bool, _NoneType})
KIND_INT = frozenset({int, _NoneType})
KIND_TEXT = frozenset({str, _NoneType})
KIND_OTHER = frozenset({str, int, float, _NoneType})
_KIND_BY_OID = {16: KIND_BOOL, 20: KIND_INT, 21: KIND_INT, 23: KIND_INT, 25: KIND_TEXT, 1042: KIND_TEXT,
                1043: KIND_TEXT}
_KIND_NAMES = {KIND_BOOL: "boolean", KIND_INT: "integer", KIND_TEXT: "string", KIND_OTHER: "string"}


def kind_for(type_oid: int) -> frozenset:
    return _KIND_BY_OID.get(type_oid, KIND_OTHER)


def copy_statement(ident: sql.Composable, columns: list[str]) -> sql.Composable:
    if not columns:
        return sql.SQL("COPY {} FROM STDIN").format(ident)  # zero-column table: one empty line per row
    return sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, NULL '\\N')").format(
        ident, sql.SQL(", ").join(map(sql.Identifier, columns)))


def encode_rows(rows: list[list[Any]], kinds: list[frozenset], table: str, columns: list[str]) -> bytes:
    if not kinds:
        return b"\n" * len(rows)
    cols = list(zip(*rows))  # column-wise, so checks and NULL substitution run in C-speed passes
    for i, col in enumerate(cols):
        found = set(map(type, col))
        if not found <= kinds[i]:
            odd = sorted(t.__name__ for t in found - kinds[i])
            raise InvalidBackupError(
                f"table {table!r} column {columns[i]!r}: found {', '.join(odd)} values where "
                f"{_KIND_NAMES[kinds[i]]} values were expected")
        if _NoneType in found:
            cols[i] = [NULL if v is None else v for v in col]
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n").writerows(zip(*cols))
    try:
        return out.getvalue().encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidBackupError(f"table {table!r}: a value is not valid Unicode text") from None


class _QueueReader:
    """File-like object for copy_expert: hands over the producer's chunks until the table ends.

    It runs in the caller's thread, so progress callbacks are made from there too."""

    def __init__(self, q: queue.Queue, on_chunk: Callable[[Any], None] | None):
        self._q = q
        self._on_chunk = on_chunk
        self.ended = False

    def read(self, size: int = -1) -> bytes:
        if self.ended:
            return b""
        item = self._q.get()
        if isinstance(item, BaseException):
            self.ended = True
            raise item
        if item is None:
            self.ended = True
            return b""
        data, mark = item
        if self._on_chunk is not None:
            self._on_chunk(mark)
        return data

    readline = read


class TableLoad:
    """What the consumer side needs for one table: the COPY statement and a progress hook."""

    def __init__(self, key: str, statement: sql.Composable):
        self.key = key
        self.statement = statement
        self.rows = 0


def run_copy_pipeline(cur, tables: Iterable[tuple[TableLoad, Iterator[tuple[bytes, Any]]]],
                      on_table: Callable[[TableLoad], None] | None = None,
                      on_chunk: Callable[[Any], None] | None = None) -> None:
    """Run one COPY per table; each table's encoded chunks are produced in a background thread.

    `tables` yields (TableLoad, iterator of (bytes, progress mark)) pairs and is consumed in the producer thread,
    so reading and encoding the backup overlap with the server's work. Errors on either side stop both and are
    re-raised here; on_chunk(mark) is called in this thread as each chunk is sent.
    """
    q: queue.Queue = queue.Queue(maxsize=8)
    control: queue.Queue = queue.Queue()
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for load, chunks in tables:
                control.put(load)
                pending: list[bytes] = []
                size = 0
                mark = None
                for chunk, mark in chunks:
                    pending.append(chunk)
                    size += len(chunk)
                    if size >= CHUNK_BYTES:
                        if not put((b"".join(pending), mark)):
                            return
                        pending, size = [], 0
                if pending and not put((b"".join(pending), mark)):
                    return
                if not put(None):
                    return
            control.put(None)
        except BaseException as exc:
            control.put(exc)
            put(exc)

    worker = threading.Thread(target=produce, name="restore-producer", daemon=True)
    worker.start()
    try:
        while True:
            item = control.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            reader = _QueueReader(q, on_chunk)
            cur.copy_expert(item.statement, reader, size=CHUNK_BYTES)
            if not reader.ended:
                # COPY finished without reading the end marker: drain to keep producer and consumer in step.
                while reader.read():
                    pass
            if on_table:
                on_table(item)
    finally:
        stop.set()
        worker.join()
