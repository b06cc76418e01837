"""Loading rows with COPY FROM STDIN, fed by a producer thread.

The producer (the caller's iterator: reading the backup and encoding COPY text, see archive/copytext.py) runs in a
thread of its own while psycopg2 sends the previous chunk with the GIL released, so parsing and the server's work
overlap. This module only moves bytes: what they mean is the archive's business.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import psycopg2
from psycopg2 import sql

from .handoff import Handoff, yield_to_server

CHUNK_BYTES = 512 << 10  # see memory.py
# Encoded chunks held between the producer and the server at once (queued, and the one being sent): ~4 ordinary
# chunks as before (they hold at least CHUNK_BYTES, up to about twice that), but two rows of a table of multi-MB
# rows (one sent, one waiting), where three queued rows had been held besides (Handoff).
IN_FLIGHT_BYTES = 8 * CHUNK_BYTES
# A chunk larger than this (one row of several MB) is passed to libpq in CHUNK_BYTES pieces: PQputCopyData copies
# what it is given into the connection's output buffer, which grows to fit it and is never shrunk (fe-misc.c).
# Ordinary chunks (below it) are passed whole, as before: no extra copy on the path that paces a restore.
SPLIT_ABOVE = 4 * CHUNK_BYTES


def copy_statement(ident: sql.Composable, columns: list[str]) -> sql.Composable:
    """Not COPY FREEZE: since PostgreSQL 14 it also sets every page all-visible/all-frozen in the visibility map as
    it loads, and the server (the restore's bottleneck) took 5-10% longer for the benchmark's tables (measured
    with pre-encoded input, alternating, 5 pairs). pg_restore does not freeze either."""
    if not columns:  # zero-column table: one empty line per row
        return sql.SQL("COPY {} FROM STDIN WITH (FORMAT text)").format(ident)
    return sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT text)").format(
        ident, sql.SQL(", ").join(map(sql.Identifier, columns)))


class _PrintedErrors:
    """What psycopg2 prints instead of raising while the thread that registered is inside a COPY.

    When the server ends the connection in the middle of a COPY FROM (pg_terminate_backend, a restart), psycopg2
    2.9 raises the server's error, then tries to raise libpq's on top of it while the first is still set, and
    prints the resulting SystemError (whose __cause__ is the server's error) with PyErr_Print, before raising a
    bare "invalid socket". tests/test_copy_in_errors.py reproduces it. PyErr_Print reports through
    sys.excepthook, so a hook installed once keeps the exception itself for the thread in the COPY (and only that
    thread: everything else goes to the previous hook untouched), and copy_table raises the server's error."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._previous: Callable | None = None
        self._lock = threading.Lock()

    def _install(self) -> None:
        with self._lock:
            if self._previous is None:
                self._previous = sys.excepthook
                sys.excepthook = self._hook

    def _hook(self, kind, value, traceback) -> None:
        caught = getattr(self._local, "caught", None)
        if caught is None:
            (self._previous or sys.__excepthook__)(kind, value, traceback)
            return
        caught.append(value)

    @contextlib.contextmanager
    def during_copy(self) -> Iterator[list[BaseException]]:
        self._install()
        self._local.caught = caught = []
        try:
            yield caught
        finally:
            self._local.caught = None


_printed = _PrintedErrors()


def _server_error(caught: list[BaseException], exc: psycopg2.Error) -> psycopg2.Error | None:
    """The server's own error (e.g. AdminShutdown, "terminating connection due to administrator command") that
    psycopg2 printed in place of raising it, with its pgcode and diagnostics; None when it printed nothing."""
    for printed in caught:
        cause = printed.__cause__ or printed.__context__
        if isinstance(cause, psycopg2.Error):
            return cause
        if isinstance(printed, psycopg2.Error):
            return printed
    return None


class _QueueReader:
    """File-like object for copy_expert: hands over the producer's chunks until the table ends.

    It runs in the caller's thread, so progress callbacks are made from there too."""

    def __init__(self, q: Handoff, on_chunk: Callable[[Any], None] | None):
        self._q = q
        self._on_chunk = on_chunk
        self._big: bytes = b""  # a chunk above SPLIT_ABOVE, handed out in pieces from _offset
        self._offset = 0
        self.ended = False
        self.error: BaseException | None = None  # what the producer raised, if anything

    def read(self, size: int = -1) -> bytes:
        if self._big:
            return self._next_piece()
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
        if len(data) > SPLIT_ABOVE:
            self._big, self._offset = data, 0
            return self._next_piece()
        return data

    def _next_piece(self) -> bytes:
        start = self._offset
        self._offset = start + CHUNK_BYTES
        if self._offset >= len(self._big):
            piece, self._big = self._big[start:], b""
            return piece
        return self._big[start:self._offset]

    readline = read


def copy_table(cur, statement: sql.Composable, reader: _QueueReader) -> None:
    """One COPY FROM STDIN fed by `reader`, with its failures raised as what they really are."""
    try:
        with _printed.during_copy() as caught:
            cur.copy_expert(statement, reader, size=CHUNK_BYTES)
    except psycopg2.Error as exc:
        # psycopg2 turns an exception raised by read() into a generic "COPY from stdin failed: error in .read()
        # call" database error, which callers would report as a failed statement. When the producer failed (a
        # corrupt or invalid file), raise its own exception so it keeps its type (InvalidBackupError) and message.
        if reader.error is not None:
            raise reader.error from None
        server = _server_error(caught, exc)
        if server is not None:
            raise server from None
        raise
    for printed in caught:  # printed without failing: not ours to hide
        (_printed._previous or sys.__excepthook__)(type(printed), printed, printed.__traceback__)


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
    chunks_out = Handoff(maxsize=3, max_bytes=IN_FLIGHT_BYTES)  # memory does not grow with the backup or its rows
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
                    del chunk  # held by `pending` only: sent, it is freed while the next one is encoded
                    if size >= CHUNK_BYTES:
                        if not put((b"".join(pending), mark), size):
                            return
                        pending, size = [], 0
                if pending and not put((b"".join(pending), mark), size):
                    return
                if not put(None):
                    return
            control.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it in its own thread
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
            copy_table(cur, item.statement, reader)
            if not reader.ended:
                # COPY finished without reading the end marker: drain to keep producer and consumer in step.
                while reader.read():
                    pass
            if on_table:
                on_table(item)
    finally:
        chunks_out.close()
