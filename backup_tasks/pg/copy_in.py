"""Loading rows with COPY FROM STDIN, fed by a producer thread.

The producer parses the backup and encodes COPY text while psycopg2 sends the previous chunk with the GIL released,
so parsing and the server's work overlap. The COPY text is made from the backup's own JSON lines in bulk
(archive/rowjson.py): NULL becomes \\N and '' an empty field, so they stay distinct.
"""

from __future__ import annotations

import contextlib
import io
import queue
import re
import sys
from typing import Any, Callable, Iterable, Iterator

import psycopg2
from psycopg2 import sql

from ..archive.reader import RawBlock
from ..archive.rowjson import dump_rows, is_canonical, lines_to_copy_text
from .handoff import Handoff, yield_to_server

CHUNK_BYTES = 512 << 10  # see pg/memory.py


def copy_statement(ident: sql.Composable, columns: list[str]) -> sql.Composable:
    """Not COPY FREEZE: since PostgreSQL 14 it also sets every page all-visible/all-frozen in the visibility map as
    it loads, and the server (the restore's bottleneck) took 5-10% longer for the benchmark's tables (measured
    with pre-encoded input, alternating, 5 pairs). pg_restore does not freeze either."""
    if not columns:  # zero-column table: one empty line per row
        return sql.SQL("COPY {} FROM STDIN WITH (FORMAT text)").format(ident)
    return sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT text)").format(
        ident, sql.SQL(", ").join(map(sql.Identifier, columns)))


def encode_rows(rows: list[list[Any]], ncolumns: int) -> bytes:
    """A batch of rows as COPY input. Values are checked by PostgreSQL's own input function for each column;
    a number or boolean given for a text column is stored as its JSON text (documented in the README)."""
    if not ncolumns:
        return b"\n" * len(rows)
    if isinstance(rows, RawBlock):  # lines as backup_tasks wrote them (checksum verified), if their shape says so
        data = lines_to_copy_text(rows.raw, width=ncolumns)
        if data is not None:
            return data
        rows = rows.parse()  # edited after the checksum was recorded: parsed and checked like any file's rows
    raw = getattr(rows, "raw", None)
    lines = raw if raw is not None and is_canonical(rows, raw) else dump_rows(rows)
    return lines_to_copy_text(lines)


@contextlib.contextmanager
def _server_error_printout() -> Iterator[io.StringIO]:
    """Catch what psycopg2 prints to sys.stderr during a COPY.

    When the server ends the connection in the middle of a COPY (pg_terminate_backend, a restart), psycopg2 2.9
    raises the server's error, then tries to raise libpq's on top of it, fails, and prints both with PyErr_Print
    (its pq_raise called twice in _pq_copy_in_v3) before raising a bare "invalid socket". The print put half a
    traceback under the CLI's `Error:` line and the real cause was lost; it is caught here and read back by
    _lost_connection_error. COPY runs in the caller's thread, and nothing else prints meanwhile."""
    buffer = io.StringIO()
    saved, sys.stderr = sys.stderr, buffer
    try:
        yield buffer
    finally:
        sys.stderr = saved


_PRINTED_ERROR = re.compile(r"^psycopg2\.(?:errors\.)?\w+: (.+)$", re.MULTILINE)


def _lost_connection_error(printed: str, exc: psycopg2.Error) -> psycopg2.Error | None:
    """The server's own error (e.g. "terminating connection due to administrator command") in place of
    psycopg2's "invalid socket", when psycopg2 printed it instead of raising it."""
    match = _PRINTED_ERROR.search(printed)
    if match is None:
        if printed.strip():
            sys.stderr.write(printed)  # not the case above: let it through as it was
        return None
    libpq = (str(exc).strip().splitlines() or ["?"])[0]
    return psycopg2.OperationalError(f"{match.group(1).strip()} (the connection was lost during COPY: {libpq})")


class _QueueReader:
    """File-like object for copy_expert: hands over the producer's chunks until the table ends.

    It runs in the caller's thread, so progress callbacks are made from there too."""

    def __init__(self, q: Handoff, on_chunk: Callable[[Any], None] | None):
        self._q = q
        self._on_chunk = on_chunk
        self.ended = False
        self.error: BaseException | None = None  # what the producer raised, if anything

    def read(self, size: int = -1) -> bytes:
        if self.ended:
            return b""
        item = self._q.get()
        if isinstance(item, BaseException):
            self.ended = True
            self.error = item
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
    """What the consumer side needs for one table: the COPY statement, and what the producer learnt of the table
    before its rows go out (`big`: see core/restore.py)."""

    def __init__(self, key: str, statement: sql.Composable, table: Any = None):
        self.key = key
        self.statement = statement
        self.table = table
        self.big = False
        self.rows = 0


def run_copy_pipeline(cur, tables: Iterable[tuple[TableLoad, Iterator[tuple[bytes, Any]]]],
                      on_table: Callable[[TableLoad], None] | None = None,
                      on_chunk: Callable[[Any], None] | None = None,
                      before_table: Callable[[TableLoad], None] | None = None) -> None:
    """Run one COPY per table; each table's encoded chunks are produced in a background thread.

    `tables` yields (TableLoad, iterator of (bytes, progress mark)) pairs and is consumed in the producer thread,
    so reading and encoding the backup overlap with the server's work. Errors on either side stop both and are
    re-raised here; on_chunk(mark) is called in this thread as each chunk is sent, and before_table(load) before
    each table's COPY starts (it may run statements on `cur`: no COPY is in progress then).
    """
    chunks_out = Handoff(maxsize=3)  # bounded: a few MB in flight, so memory does not grow with the backup
    control: queue.Queue = queue.Queue()
    put = chunks_out.put

    def produce() -> None:
        yield_to_server()
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

    chunks_out.start(produce, "copy-producer")
    try:
        while True:
            item = control.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            if before_table:
                before_table(item)
            reader = _QueueReader(chunks_out, on_chunk)
            try:
                with _server_error_printout() as printed:
                    cur.copy_expert(item.statement, reader, size=CHUNK_BYTES)
            except psycopg2.Error as exc:
                # psycopg2 turns an exception raised by read() into a generic "COPY from stdin failed: error in
                # .read() call" database error, which callers would report as a failed statement. When the
                # producer failed (a corrupt or invalid file), raise its own exception so it keeps its type
                # (InvalidBackupError) and message.
                if reader.error is not None:
                    raise reader.error from None
                lost = _lost_connection_error(printed.getvalue(), exc)
                if lost is not None:
                    raise lost from None
                raise
            if printed.getvalue():
                sys.stderr.write(printed.getvalue())  # printed without failing: not ours to hide
            if not reader.ended:
                # COPY finished without reading the end marker: drain to keep producer and consumer in step.
                while reader.read():
                    pass
            if on_table:
                on_table(item)
    finally:
        chunks_out.close()
