"""Reading table rows inside one consistent snapshot, with a prefetch thread, in batches bounded by bytes.

The prefetch thread keeps libpq receiving the next batch (psycopg2 releases the GIL while it waits) while the
caller serialises and compresses the current one. A batch is a number of rows chosen so that it holds about
`batch_bytes` (BatchSizer): narrow tables are fetched 2,000 rows at a time as before, a table of multi-MB rows a
row at a time, so memory follows the bytes in flight whatever the rows are like.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from ..errors import DatabaseError, Transient
from .catalog import (
    Catalog,
    NotIncluded,
    Sequence,
    Table,
    read_catalog,
    read_migration_version,
    read_not_included,
    read_sequence_states,
    unreadable_tables,
)
from .connection import connect, connection, pg_error_message, privilege_hint
from .handoff import Handoff
from .largeobjects import LargeObject, list_large_objects

MAX_ROWS = 2000  # measured: 2,000 narrow rows a fetch keep peak RSS at tens of MB; 50,000 raised it to ~350 MB
IN_FLIGHT = 4  # batches queued between the fetching thread and the consumer, and as many budgets of bytes


def begin_snapshot(conn, lock_timeout_s: float) -> None:
    """REPEATABLE READ, READ ONLY: every table is read as of one moment, as pg_dump does."""
    conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
    with conn.cursor() as cur:
        cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(lock_timeout_s * 1000)}ms",))


def export_snapshot(cur) -> str:
    """The transaction's snapshot id, for other sessions to read exactly what this one reads."""
    cur.execute("SELECT pg_export_snapshot()")
    return cur.fetchone()[0]


def lock_tables(cur, tables: list[Table], mode: str = "ACCESS SHARE") -> None:
    """`mode` on every table (ACCESS SHARE: none is dropped or truncated under the backup)."""
    lock_relations(cur, [t.ident.as_string(cur) for t in tables], mode)


def lock_relations(cur, relations: list[str], mode: str = "ACCESS SHARE", *, nowait: bool = False) -> None:
    """`mode` on tables given by quoted name (ONLY each: not its partitions or children), 500 a statement.
    nowait: fail at once (lock not available) rather than queue behind a waiting request (join_snapshot)."""
    suffix = f" IN {mode} MODE" + (" NOWAIT" if nowait else "")
    for start in range(0, len(relations), 500):
        cur.execute("LOCK TABLE " + ", ".join("ONLY " + r for r in relations[start:start + 500]) + suffix)


BOOL_OID = 16


def select_rows(table: Table, columns: list[str] | None = None, *, bool_as_text: bool = False,
                pages: tuple[int, int | None] | None = None) -> sql.Composable:
    """The backup's SELECT: native types as they are, every other type as its text output. `columns` picks
    the order (a diff reads the database in the backup's column order). bool_as_text: booleans as `true`/`false`,
    as the backup's JSON spells them (COPY TO would write t/f). An extension's configuration table is read through
    its extension's filter (only the rows it selects are user data)."""
    by_name = {c.name: c for c in table.columns}
    chosen = table.data_columns if columns is None else [by_name[n] for n in columns]
    cols = sql.SQL(", ").join(
        sql.Identifier(c.name) if c.native and not (bool_as_text and c.type_oid == BOOL_OID)
        else sql.SQL("{}::text").format(sql.Identifier(c.name))
        for c in chosen
    )
    query = sql.SQL("SELECT {} FROM ONLY {}").format(cols, table.ident)
    if table.filter:
        query = sql.SQL("{} {}").format(query, sql.SQL(table.filter))  # the extension's own "WHERE …" text
    elif pages is not None:
        query = sql.SQL("{} WHERE {}").format(query, page_range(*pages))
    return query


def page_range(first: int, stop: int | None) -> sql.Composable:
    """Rows on pages [first, stop): a TID Range Scan (PostgreSQL 14+), in the order a sequential scan returns
    them. stop=None: to the end of the table (rows of pages added since the plan are invisible to the snapshot)."""
    low = sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({first},0)"))
    if stop is None:
        return low
    return sql.SQL("{} AND ctid < {}::tid").format(low, sql.Literal(f"({stop},0)"))


def join_snapshot(conn, snapshot: str, relations: list[str] | None = None) -> None:
    """Read exactly what the exporting transaction reads: REPEATABLE READ READ ONLY, then SET TRANSACTION
    SNAPSHOT as its first statement (the exporter must still be open; pg_dump -j works so).

    relations: the tables this session will read (quoted names), locked at once with NOWAIT, as pg_dump -j's
    workers do. The exporter holds their ACCESS SHARE locks already; a session that asked for a stronger lock
    since (a migration's ALTER TABLE) waits for the exporter, and this session's first read of the table would
    queue behind that request: the exporter waits for this session, which waits for the migration, which waits
    for the exporter. The server sees no cycle (the exporter waits in the client), so nothing would end it, and
    every query of the application on that table would queue behind the migration meanwhile. Such a lock fails
    here instead, at once, as a DatabaseError naming the table (transient: the job is retried later)."""
    conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
    with conn.cursor() as cur:
        cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
        try:
            lock_relations(cur, relations or [], nowait=True)
        except psycopg2.errors.LockNotAvailable as exc:
            raise DatabaseError(
                f"{pg_error_message(exc)}: another session waits for a lock on it behind this job's own (a "
                "migration's ALTER TABLE, say), so a second session of this job cannot read it without a deadlock",
                hint="Nothing was written or changed. Run it again once that statement is done (pg_stat_activity "
                "shows it waiting, wait_event_type 'Lock'); a queued or scheduled backup retries by itself.",
                transient=Transient.DATABASE) from None


class BatchSizer:
    """How many rows the next fetch of a table asks for, so that a batch holds about `budget` bytes.

    A table's first fetch is a single row, measured here (its values' lengths): multi-MB rows are then fetched a
    row at a time from the start, narrow ones up to MAX_ROWS at a time (one extra round trip a table). After that
    the consumer reports each batch's exact size as it serialises it (observe), and the next fetches follow the
    widths seen. Memory is then about IN_FLIGHT batches of `budget`; rows wider than that are held fewer at a time
    (iter_batches bounds the bytes too, by estimate_bytes), at least one; a table whose rows turn much wider after
    many narrow ones can hold MAX_ROWS of the wide ones in its next fetch, once."""

    def __init__(self, budget: int):
        self.budget = max(budget, 1)
        self._lock = threading.Lock()
        self._rows = 1
        self._row_bytes = 0.0  # a row's size, as last measured
        self._measured = False

    def next(self) -> int:
        with self._lock:
            return self._rows

    def first(self, rows: list[tuple]) -> None:
        """The fetching thread's own measure of the first row(s), before the consumer has said anything."""
        if self._measured or not rows:
            return
        width = sum(len(v) if isinstance(v, (str, bytes, memoryview)) else 8 for v in rows[0]) + 8
        self.observe(1, width)

    def observe(self, rows: int, nbytes: int) -> None:
        if rows <= 0:
            return
        with self._lock:
            self._measured = True
            self._row_bytes = nbytes / rows
            self._rows = max(1, min(MAX_ROWS, int(self.budget * rows / max(nbytes, 1))))

    def estimate_bytes(self, rows: int) -> int:
        """What `rows` rows of the table take written, by the widths seen so far (0 before any)."""
        with self._lock:
            return int(rows * self._row_bytes)


_END = object()


def iter_table_batches(conn, tables: list[Table], budget: int, columns: list[list[str]] | None = None, *,
                       url: str | None = None) -> Iterator[tuple[int, Any, BatchSizer]]:
    """Yield (table index, batch of row tuples, sizer) for every table in order, then (index, END, sizer) after
    each table. The caller reports each batch's serialised size to `sizer.observe`. With `url`, many small
    tables are shared with a second session in the same snapshot (side_reader)."""
    statements = [select_rows(t, columns[i] if columns else None) for i, t in enumerate(tables)]
    small = [is_small(t, budget) for t in tables]
    with side_reader(url, conn, tables, small) as side:
        yield from iter_batches(conn, statements, budget, small, side=side)


def is_small(table: Table, budget: int) -> bool:
    """A table read in one round trip (no server-side cursor): so little stored data that even decompressed from
    TOAST it stays well within a batch. A thousand small tables cost a thousand round trips, not four thousand."""
    return table.data_bytes <= budget // 16


def iter_batches(conn, statements: list[sql.Composable | str], budget: int, small: list[bool] | None = None,
                 in_flight: int = IN_FLIGHT, side: SideReader | None = None) -> Iterator[tuple[int, Any, BatchSizer]]:
    """iter_table_batches for SELECTs given as statements (a part of a parallel backup gets its own); `small`
    marks those read whole in one round trip; at most `in_flight` batches queued (per reading session). `side`:
    a second session that reads the statements it names, each session in order; they are yielded in order."""
    owner = [0] * len(statements)
    readers = [(conn, list(range(len(statements))))]
    if side is not None:
        for i in side.indices:
            owner[i] = 1
        readers = [(conn, [i for i, o in enumerate(owner) if o == 0]), (side.conn, side.indices)]
    # Bounded in bytes too: a table of 5 MB rows held IN_FLIGHT + 2 of them (queued, being written, being fetched).
    handoffs = [Handoff(maxsize=in_flight, max_bytes=in_flight * budget) for _ in readers]
    for k, ((session, indices), handoff) in enumerate(zip(readers, handoffs, strict=True)):
        handoff.start(_producer(session, statements, indices, small, budget, handoff.put), f"backup-prefetch-{k}")
    try:
        for i in range(len(statements)):
            batches = handoffs[owner[i]]
            while True:
                item = batches.get()
                if isinstance(item, BaseException):
                    raise _reading_error(item) from None
                yield item
                if item[1] is _END:
                    break
    finally:
        for handoff in handoffs:
            handoff.close()


def _producer(conn, statements: list, indices: list[int], small: list[bool] | None, budget: int,
              put: Callable[..., bool]) -> Callable[[], None]:
    """One session's reading thread: its statements in order, each table's batches then (i, END, sizer)."""
    def produce() -> None:
        try:
            for i in indices:
                sizer = BatchSizer(budget)
                if small and small[i]:
                    if not _read_whole(conn, statements[i], i, sizer, put):
                        return
                elif not _read_in_batches(conn, statements[i], i, sizer, put):
                    return
                if not put((i, _END, sizer)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it in its own thread
            put(exc)

    return produce


# A second session pays for itself from about this many small tables: connecting, joining the snapshot and locking
# its share cost ~10 ms; each small table costs its session a round trip and the server's first opening of the
# relation (~0.3 ms on the benchmark's 1,000 tables), which the two sessions then do side by side.
SIDE_READER_MIN_TABLES = 100


@dataclass
class SideReader:
    conn: Any
    indices: list[int]  # the statements it reads, in order


@contextmanager
def side_reader(url: str | None, conn, tables: list[Table], small: list[bool]) -> Iterator[SideReader | None]:
    """A second session in the backup's snapshot that reads every other small table, when there are many of
    them (a database of a thousand small tables is paced by round trips and by the server opening each table,
    not by the bytes). It joins the exported snapshot, so it reads exactly what `conn` reads, and takes its
    tables' ACCESS SHARE locks NOWAIT at once, as pg_dump -j's workers do: a lock it would have to queue for (a
    migration's ALTER waiting behind the backup) would wait for the backup itself. Anything that keeps it from
    starting (no free connection slot, a lock not available) leaves the whole backup to `conn`: None."""
    # Before PostgreSQL 10 a hot standby cannot export a snapshot, and the failed export would abort the
    # backup's own transaction: such servers keep the one session.
    if url is None or sum(small) < SIDE_READER_MIN_TABLES or conn.server_version < 100000:
        yield None
        return
    picks = [i for i, is_it in enumerate(small) if is_it][1::2]
    try:
        with conn.cursor() as cur:
            snapshot = export_snapshot(cur)
    except psycopg2.Error as exc:  # the backup's own transaction is aborted now: the backup cannot go on
        raise _reading_error(exc) from None
    session = _joined_session(url, snapshot, [tables[i] for i in picks])
    if session is None:
        yield None
        return
    try:
        yield SideReader(session, picks)
    finally:
        session.close()


def _joined_session(url: str, snapshot: str, tables: list[Table]):
    try:
        session = connect(url, application="backup_tasks_reader")
    except DatabaseError:
        return None
    try:
        join_snapshot(session, snapshot, [t.ident.as_string(session) for t in tables])
    except (psycopg2.Error, DatabaseError):  # DatabaseError: a lock not available (join_snapshot's NOWAIT)
        session.close()
        return None
    return session


def _read_whole(conn, statement, i: int, sizer: BatchSizer, put: Callable[[Any], bool]) -> bool:
    with conn.cursor() as cur:
        cur.execute(statement)
        rows = cur.fetchall()
    return not rows or put((i, rows, sizer), sizer.estimate_bytes(len(rows)))


def _read_in_batches(conn, statement, i: int, sizer: BatchSizer, put: Callable[[Any], bool]) -> bool:
    with conn.cursor(name=f"backup_tasks_{i}") as cur:
        cur.execute(statement)
        while rows := cur.fetchmany(sizer.next()):
            sizer.first(rows)
            if not put((i, rows, sizer), sizer.estimate_bytes(len(rows))):
                return False
            del rows  # the consumer's now: not held here while the next batch is fetched
    return True


def batches_in_snapshot(url: str, snapshot: str | None, statements: list[str], budget: int, small: list[bool],
                        application: str, in_flight: int,
                        relations: list[str] | None = None) -> Iterator[tuple[int, Any, BatchSizer]]:
    """iter_batches on a connection of its own that joins an exported snapshot (another process's reader, such as
    the diff's), its tables (`relations`) locked NOWAIT; PostgreSQL's errors as DatabaseErrors."""
    with connection(url, application=application) as conn:
        if snapshot:
            try:
                join_snapshot(conn, snapshot, relations)
            except psycopg2.Error as exc:
                raise _reading_error(exc) from None
        yield from iter_batches(conn, statements, budget, small, in_flight)


def _reading_error(exc: BaseException) -> BaseException:
    if isinstance(exc, psycopg2.Error):
        # privilege_hint: the default hint ("check DATABASE_URL…") misleads when the role may not read every row.
        return DatabaseError(f"reading rows failed: {pg_error_message(exc)}", hint=privilege_hint(exc))
    return exc


END = _END


@dataclass
class SnapshotInfo:
    """What a backup's snapshot holds besides the rows: read first, in the snapshot, before any row."""

    taken_at: datetime
    database: str
    server_version: str
    catalog: Catalog
    migration_version: str | None
    sequences: list[tuple[Sequence, int, bool]]
    large_objects: list[LargeObject]
    not_included: list[NotIncluded]


def open_backup_snapshot(conn, lock_timeout_s: float) -> SnapshotInfo:
    """Start the backup's transaction and read what it holds: tables (refusing at once, naming them all, when
    some cannot be read completely), their locks, the migration version, sequences and large objects."""
    try:
        begin_snapshot(conn, lock_timeout_s)
        cur = conn.cursor()
        cur.execute("SELECT now(), current_database(), current_setting('server_version')")  # the snapshot is here
        taken_at, database, version = cur.fetchone()
        catalog = read_catalog(cur)
        unreadable = unreadable_tables(cur, catalog.tables)
        if not unreadable:
            lock_tables(cur, catalog.tables)
            info = SnapshotInfo(taken_at.astimezone(UTC), database, version, catalog,
                                read_migration_version(cur, catalog.alembic),
                                read_sequence_states(cur, catalog.sequences), list_large_objects(cur),
                                read_not_included(cur))
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot start the backup: {pg_error_message(exc)}", hint=privilege_hint(exc)) from None
    if unreadable:
        raise DatabaseError(
            f"cannot back up all of {database}: this role cannot read {len(unreadable)} table"
            f"{'s' if len(unreadable) != 1 else ''}: {', '.join(unreadable[:20])}"
            + (f" and {len(unreadable) - 20} more" if len(unreadable) > 20 else ""),
            hint="Grant SELECT on them (and BYPASSRLS where row security applies), or back up as their owner or a "
                 "superuser: a backup never leaves a table out.")
    return info
