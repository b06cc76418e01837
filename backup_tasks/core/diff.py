"""calculate_diff: what a restore of the backup would change, per table.

Row counts come from one pass over the file. With detailed=True the rows of every table that has a primary key
and the same columns in both places are loaded into a temporary table (server-side, so client memory stays
bounded) and joined with the live table on the key: rows to insert, to delete and to change. The transaction is
rolled back at the end, so nothing persists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import psycopg2
from psycopg2 import sql

from ..archive.reader import BackupReader, Contents, scan
from ..errors import DatabaseError
from ..models import DiffSummary, TableDiff
from ..pg.catalog import Table, read_catalog, read_migration_version
from ..pg.connection import connection, pg_error_message, privilege_hint
from ..pg.copy_in import TableLoad, copy_statement, encode_rows, run_copy_pipeline
from ..progress import Progress, ProgressFn, Throttle
from ..settings import get_settings


def calculate_diff(backup_path: Path, *, database_url: str | None = None, detailed: bool = True,
                   progress: ProgressFn | None = None, tables: list[str] | None = None) -> DiffSummary:
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
                contents, details = _detailed(cur, path, db_tables, selected, settings.BACKUP_MAX_LINE_BYTES, report)
            else:
                def on_progress(reader, header, rows):
                    report(Progress("diff", header.key, rows, None, reader.compressed_done, reader.compressed_size))

                contents = scan(path, settings.BACKUP_MAX_LINE_BYTES, on_progress, parse_rows=False)
                details = {}
        except psycopg2.Error as exc:
            raise DatabaseError(f"diff failed: {pg_error_message(exc)}", hint=privilege_hint(exc)) from None
        finally:
            conn.rollback()
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


def _detailed(cur, path: Path, db_tables: dict[str, Table], selected, max_line: int,
              report: Throttle) -> tuple[Contents, dict[str, tuple[int, int, int]]]:
    temps: dict[str, tuple[Table, sql.Composable]] = {}
    headers = []

    with BackupReader(path, max_line) as reader:
        total = reader.compressed_size

        def stream() -> Iterator[tuple[TableLoad, Any]]:
            for table_rows in reader.tables():
                header = table_rows.header
                headers.append(header)
                table = db_tables.get(header.key)
                wanted = selected is None or header.key in selected
                if not wanted or not _comparable(header, table):
                    for _ in table_rows.batches():
                        pass  # counted and checked by the reader
                    continue
                temp = sql.Identifier(f"backup_tasks_diff_{len(temps)}")
                cols = {c.name: c for c in table.columns}
                # Created by the same statement as its COPY, in the thread that runs the COPYs: this generator
                # runs in the producer thread, where a statement would interrupt the previous table's COPY.
                create = sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
                    temp, sql.SQL(", ").join(
                        sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(cols[n].type_name)) for n in header.columns))
                temps[header.key] = (table, temp)
                load = TableLoad(header.key, sql.SQL("{}; {}").format(create, copy_statement(temp, header.columns)))

                def chunks(table_rows=table_rows, load=load, header=header):
                    for batch in table_rows.batches():
                        data = encode_rows(batch, len(header.columns))
                        load.rows += len(batch)
                        yield data, (header.key, load.rows)

                yield load, chunks()

        def on_chunk(mark) -> None:
            report(Progress("diff", mark[0], mark[1], None, reader.compressed_done, total))

        run_copy_pipeline(cur, stream(), on_chunk=on_chunk)
        contents = Contents(reader.metadata, headers, reader.src.uncompressed)

    details: dict[str, tuple[int, int, int]] = {}
    for key, (table, temp) in temps.items():
        details[key] = _compare(cur, table, temp)
    return contents, details


def _compare(cur, table: Table, temp: sql.Composable) -> tuple[int, int, int]:
    pk = [sql.Identifier(c) for c in table.primary_key]
    row = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(sql.Identifier(c.name) for c in table.data_columns))
    side = sql.SQL("SELECT {pk}, true AS present, {row} AS r FROM {src}")
    query = sql.SQL(
        "SELECT count(*) FILTER (WHERE c.present IS NULL), count(*) FILTER (WHERE b.present IS NULL), "
        "count(*) FILTER (WHERE b.present AND c.present AND b.r IS DISTINCT FROM c.r) "
        "FROM ({b}) b FULL JOIN ({c}) c USING ({using})"
    ).format(
        b=side.format(pk=sql.SQL(", ").join(pk), row=row, src=temp),
        c=side.format(pk=sql.SQL(", ").join(pk), row=row, src=sql.SQL("ONLY {}").format(table.ident)),
        using=sql.SQL(", ").join(pk),
    )
    cur.execute(query)
    ins, dele, chg = cur.fetchone()
    return int(ins), int(dele), int(chg)
