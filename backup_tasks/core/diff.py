"""calculate_diff: what a restore of the backup would change, per table.

Row counts come from one pass over the file. With detailed=True every table that has a primary key and the same
columns in both places is compared row by row: each side is reduced to (key hash, row hash) pairs in temporary
tables (server-side, so client memory stays bounded) that the server joins: rows to insert, to delete and to
change. The transaction is rolled back at the end, so nothing persists.
"""

from __future__ import annotations

from operator import itemgetter
from pathlib import Path
from typing import Any, Iterator

import psycopg2
from psycopg2 import sql

from ..archive.reader import BackupReader, Contents, scan
from ..errors import DatabaseError
from ..models import DiffSummary, TableDiff
from ..pg.catalog import Table, read_catalog, read_migration_version
from ..pg.connection import connection, pg_error_message, privilege_hint
from ..pg.copy_in import TableLoad, run_copy_pipeline
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


def _fingerprints(rows, pk_index: list[int]) -> bytes:
    """COPY text lines `key_hash<TAB>row_hash` for a batch, with Python's 64-bit SipHash of the values.

    Both sides are hashed here, in this process, from the same values (the file's JSON scalars and the
    database's values read exactly as a backup reads them), so equal hashes mean equal rows up to a 2^-64
    collision. Hashing tuples keeps the work in C: no per-row serialisation."""
    if not rows:
        return b""
    row_hashes = map(hash, map(tuple, rows))
    key_hashes = map(hash, map(itemgetter(*pk_index), rows))
    return b"\n".join(map(b"%d\t%d".__mod__, zip(key_hashes, row_hashes))) + b"\n"


def _fingerprint_table(temp: sql.Composable) -> sql.Composable:
    # Created in the same statement as its COPY, in the thread that runs the COPYs (the producer thread must
    # not run statements: it would interrupt the COPY in progress).
    return sql.SQL("CREATE TEMP TABLE {} (k bigint, h bigint) ON COMMIT DROP; COPY {} FROM STDIN").format(temp, temp)


def _detailed(cur, url: str, path: Path, db_tables: dict[str, Table], selected, max_line: int,
              report: Throttle) -> tuple[Contents, dict[str, tuple[int, int, int]]]:
    """Row-level diff in bounded memory: both sides are reduced to (key hash, row hash) pairs in temporary
    tables on the server, which joins them. Costs about one backup's read of each side."""
    compared: dict[str, tuple[Table, list[str], list[int]]] = {}
    headers = []

    with BackupReader(path, max_line) as reader:
        total = reader.compressed_size

        def from_file() -> Iterator[tuple[TableLoad, Any]]:
            for table_rows in reader.tables():
                header = table_rows.header
                headers.append(header)
                table = db_tables.get(header.key)
                wanted = selected is None or header.key in selected
                if not wanted or not _comparable(header, table):
                    for _ in table_rows.batches():
                        pass  # counted and checked by the reader
                    continue
                pk_index = [header.columns.index(c) for c in table.primary_key]
                compared[header.key] = (table, header.columns, pk_index)
                load = TableLoad(header.key, _fingerprint_table(_temp("f", len(compared))))

                def chunks(table_rows=table_rows, load=load, pk_index=pk_index):
                    for batch in table_rows.batches():
                        load.rows += len(batch)
                        yield _fingerprints(batch, pk_index), (load.key, load.rows)

                yield load, chunks()

        def on_chunk(mark) -> None:
            report(Progress("diff", mark[0], mark[1], None, reader.compressed_done, total))

        run_copy_pipeline(cur, from_file(), on_chunk=on_chunk)
        contents = Contents(reader.metadata, headers, reader.src.uncompressed)

    if compared:
        # The database side is read on a second connection, exactly as a backup reads it, while this one
        # loads its fingerprints.
        with connection(url) as reader_conn:
            reader_conn.set_session(readonly=True)
            tables = [t for t, _, _ in compared.values()]

            def from_database() -> Iterator[tuple[TableLoad, Any]]:
                batches = iter_table_batches(reader_conn, tables,
                                             columns=[cols for _, cols, _ in compared.values()])
                for i, (key, (table, cols, pk_index)) in enumerate(compared.items()):
                    load = TableLoad(key, _fingerprint_table(_temp("d", i + 1)))

                    def chunks(load=load, pk_index=pk_index, i=i):
                        for index, batch in batches:
                            if batch is END:
                                return
                            load.rows += len(batch)
                            yield _fingerprints(batch, pk_index), (load.key, load.rows)

                    yield load, chunks()

            run_copy_pipeline(cur, from_database())

    return contents, {key: _compare(cur, _temp("f", i + 1), _temp("d", i + 1))
                      for i, key in enumerate(compared)}


def _temp(side: str, n: int) -> sql.Composable:
    return sql.Identifier(f"backup_tasks_diff_{side}{n}")


def _compare(cur, backup: sql.Composable, current: sql.Composable) -> tuple[int, int, int]:
    cur.execute(sql.SQL(
        "SELECT count(*) FILTER (WHERE c.k IS NULL), count(*) FILTER (WHERE b.k IS NULL), "
        "count(*) FILTER (WHERE b.h <> c.h) FROM {} b FULL JOIN {} c ON b.k = c.k").format(backup, current))
    ins, dele, chg = cur.fetchone()
    return int(ins), int(dele), int(chg)
