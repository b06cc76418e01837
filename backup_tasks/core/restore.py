"""restore_backup: replace the database's data with a backup's, all-or-nothing in one transaction."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any, Iterator

import psycopg2
from psycopg2 import sql

from ..checksum import check_recorded
from ..archive.reader import BackupReader, Contents, read_contents_fast, scan
from ..errors import BackupError, DatabaseError, InvalidBackupError, RestoreError, SchemaMismatchError, UsageError
from ..models import FORMAT_NAME, RestoredTable, RestoreResult
from ..pg import restore_ops as ops
from ..pg.catalog import read_catalog, read_migration_version
from ..pg.connection import connection, pg_error_message, privilege_hint
from ..archive.copytext import encode_rows
from ..pg.copy_in import TableLoad, copy_statement, run_copy_pipeline
from ..progress import Progress, ProgressFn, Throttle
from ..memory import pin_mmap_threshold
from ..settings import get_settings
from .diff import calculate_diff
from .plan import RestorePlan, plan_restore


def load_contents(path: Path, max_line: int) -> Contents:
    """Table list from the metadata when the file carries one (no extra pass), else from a full scan."""
    return read_contents_fast(path, max_line) or scan(path, max_line)


def restore_backup(backup_path: Path, show_diff: bool = True, *, database_url: str | None = None,
                   dry_run: bool = False, tables: list[str] | None = None,
                   progress: ProgressFn | None = None) -> RestoreResult:
    """Restore the backup into the database (DATABASE_URL or `database_url`).

    show_diff computes the seed's per-table row counts first (result.diff); dry_run computes the full diff
    and changes nothing. Raises a BackupError (a RuntimeError); on any failure nothing was changed.
    """
    pin_mmap_threshold()
    settings = get_settings()
    url = database_url or settings.database_url
    path = Path(backup_path)
    started = time.monotonic()
    # A file changed since it was written is refused before the database is touched.
    verified = check_recorded(path) if path.is_file() else None
    contents = load_contents(path, settings.BACKUP_MAX_LINE_BYTES)
    meta = contents.metadata
    # Bytes that match the SHA-256 recorded when backup_tasks wrote them are its own canonical JSON lines: they go
    # to COPY without being parsed again (measured: ~40% of the restore's Python work). Any other file (no
    # sidecar, another writer) is parsed and checked row by row.
    trusted = verified is not None and meta.format == FORMAT_NAME
    if tables is not None and not tables:
        tables = None

    diff = None
    if dry_run:
        _check_plan(url, contents, tables)
    if dry_run or show_diff:
        diff = calculate_diff(path, database_url=url, detailed=dry_run, progress=progress, tables=tables)
    if dry_run:
        return RestoreResult(
            success=True, dry_run=True, restored_tables=0, restored_rows=0,
            message="Dry run: nothing was changed.", backup_name=path.name, backup_timestamp=meta.timestamp,
            migration_version_before=diff.current_migration_version, migration_version_after=meta.migration_version,
            diff=diff, duration_s=round(time.monotonic() - started, 3),
        )

    report = Throttle(progress)
    with connection(url) as conn:
        cur = conn.cursor()
        try:
            ops.lock_timeout(cur, settings.BACKUP_LOCK_TIMEOUT_S)
            catalog = read_catalog(cur)
            plan = plan_restore(contents, catalog, tables)
            sequences = _sequences_to_restore(cur, contents, plan, tables)
            before = read_migration_version(cur, catalog.alembic)
            targets = plan.targets
            ancestors = ops.partition_ancestors(cur, catalog.tables)  # all tables: see relevant_foreign_keys
            fks, coverage = ops.relevant_foreign_keys(catalog, targets, ancestors)
            if tables:
                _refuse_broken_references(cur, coverage)

            triggers = ops.disable_user_triggers(cur, catalog, targets)
            saved_fks = ops.drop_foreign_keys(cur, fks)
            saved_checks = ops.drop_unvalidated_checks(cur, targets)
            ops.truncate(cur, targets)
            saved_indexes: list[ops.SavedIndex] = []

            def before_table(load: TableLoad) -> None:
                if load.big:
                    saved_indexes.extend(ops.drop_indexes_for_load(cur, [load.table]))
            # A partial restore (`tables=`) leaves every other table as it is, so the database as a whole is
            # not at the backup's migration version: only a full restore adjusts alembic_version.
            has_alembic = (not tables) and ops.set_migration_version(cur, catalog.alembic, meta.migration_version)

            restored: list[RestoredTable] = []
            with BackupReader(path, settings.BACKUP_MAX_LINE_BYTES, parse_rows=not trusted) as reader:
                total = reader.compressed_size

                def on_chunk(mark: Any) -> None:
                    key, rows = mark
                    report(Progress("restore", key, rows, contents.total_rows or None,
                                    reader.compressed_done, total))

                run_copy_pipeline(
                    cur, _load_stream(reader, plan, contents, settings.BACKUP_REBUILD_INDEXES_MIN_ROWS),
                    on_table=lambda load: restored.append(RestoredTable(name=load.key, rows=load.rows)),
                    on_chunk=on_chunk, before_table=before_table,
                )
                if not reader.finished:
                    raise InvalidBackupError(f"{path.name} ended before the document was complete")
            report.flush()
            ops.rebuild_indexes(cur, saved_indexes)
            ops.add_foreign_keys(cur, saved_fks)
            ops.add_foreign_keys(cur, saved_checks)  # same statement shape: ALTER TABLE … ADD CONSTRAINT … NOT VALID
            ops.enable_triggers(cur, triggers)
            # setval is not transactional: it runs last, once nothing else can fail but the commit.
            if sequences is None:  # the file records no sequence states: derive them from the restored rows
                sequences_set = ops.sync_owned_sequences(cur, [p.table for p in plan.loads.values()] + plan.emptied,
                                                         ancestors)
            else:
                ops.set_sequences(cur, sequences)
                sequences_set = len(sequences)
            conn.commit()
        except psycopg2.Error as exc:
            _rollback(conn)
            hint = privilege_hint(exc)
            raise RestoreError(f"restore failed and was rolled back: {pg_error_message(exc)}",
                               hint=f"Nothing was changed. {hint}" if hint else None) from None
        except BaseException:
            _rollback(conn)
            raise

    rows = sum(t.rows for t in restored)
    return RestoreResult(
        success=True, restored_tables=len(restored), restored_rows=rows,
        message=f"Restore completed: {len(restored)} tables, {rows} rows",
        backup_name=path.name, backup_timestamp=meta.timestamp,
        migration_version_before=before,
        migration_version_after=meta.migration_version if has_alembic else before,
        truncated=[t.key for t in targets], tables=restored, sequences_restored=sequences_set,
        triggers_mode="disabled user triggers during load" if triggers else None,
        diff=diff, duration_s=round(time.monotonic() - started, 3),
    )


def _rollback(conn) -> None:
    """Roll back. A connection that died (terminated by the server, network gone) raised InterfaceError here,
    which replaced the RestoreError with a traceback; its transaction ended with it, so there is nothing to undo."""
    try:
        conn.rollback()
    except psycopg2.Error:
        pass


def _check_plan(url: str, contents: Contents, tables: list[str] | None) -> None:
    """A dry run refuses what the restore would refuse before changing anything: tables, columns or sequences the
    database lacks. The diff alone listed such tables and reported success, and only the real restore failed."""
    with connection(url) as conn:
        cur = conn.cursor()
        try:
            plan = plan_restore(contents, read_catalog(cur), tables)
            _sequences_to_restore(cur, contents, plan, tables)
        except psycopg2.Error as exc:
            raise DatabaseError(f"dry run failed: {pg_error_message(exc)}", hint=privilege_hint(exc)) from None


# A table is "big" (its indexes are built again after the load rather than maintained during it) when it holds
# at least BACKUP_REBUILD_INDEXES_MIN_ROWS rows, or this many bytes of rows.
BIG_TABLE_BYTES = 4 << 20


def _load_stream(reader: BackupReader, plan: RestorePlan, contents: Contents,
                 big_rows: int) -> Iterator[tuple[TableLoad, Any]]:
    """Runs in the producer thread: each table of the file, checked against the plan, as encoded chunks.

    Before a table is handed over, its first blocks are read ahead until it is known to be big: the table list
    at the head of the file has no row counts (they follow each table's rows), and the indexes must be dropped
    before its COPY starts. At most ~BIG_TABLE_BYTES are held for that."""
    # The tables may come in any order: JSON objects are unordered, and a file re-serialised by another tool
    # (sorted keys, say) is still the same document. Every table must be listed in the metadata, exactly once
    # (the reader refuses duplicate keys), and all of them must be there.
    expected = {t.key for t in contents.tables}
    seen: set[str] = set()
    for table in reader.tables():
        header = table.header
        if header.key not in expected:
            raise InvalidBackupError(f"{reader.path.name}: table {header.key!r} is not listed in its metadata")
        seen.add(header.key)
        target = plan.loads.get(header.key)
        if target is None:  # not selected with --table: read past it
            for _ in table.batches():
                pass
            continue
        if header.columns != target.header.columns:
            raise InvalidBackupError(f"{reader.path.name}: table {header.key!r} has other columns than the "
                                     "metadata lists")
        load = TableLoad(header.key, copy_statement(target.table.ident, header.columns), target.table)
        batches = table.batches()
        ahead, rows, size = [], 0, 0
        for batch in batches:
            ahead.append(batch)
            rows += len(batch)
            size += len(getattr(batch, "raw", None) or b"")
            if rows >= big_rows or size >= BIG_TABLE_BYTES:
                break
        load.big = rows >= big_rows or size >= BIG_TABLE_BYTES

        yield load, _encoded(itertools.chain(ahead, batches), load, len(header.columns))
    if seen != expected:
        missing = sorted(expected - seen)
        raise InvalidBackupError(f"{reader.path.name} lacks tables its metadata lists: {', '.join(missing[:5])}")


def _encoded(batches: Iterator[Any], load: TableLoad, width: int) -> Iterator[tuple[bytes, Any]]:
    for batch in batches:
        data = encode_rows(batch, width)
        load.rows += len(batch)
        yield data, (load.key, load.rows)


def _sequences_to_restore(cur, contents: Contents, plan: RestorePlan,
                          tables: list[str] | None) -> list[tuple[str, str, int, bool]] | None:
    """The recorded sequence states to set, or None when the file records none (a file in the seed's bare
    format, whose metadata has no `sequences` field): then the restore derives them from the restored rows,
    or the application's next INSERT into a serial or identity column would collide with a restored row."""
    if "sequences" not in contents.metadata.model_fields_set:
        return None
    states = [(s.schema_name, s.name, s.last_value, s.is_called) for s in contents.metadata.sequences]
    existing = ops.existing_sequences(cur)
    missing = [f"{s}.{n}" for s, n, _, _ in states if (s, n) not in existing]
    if tables:
        # Only the sequences owned by the restored tables (serial and identity columns).
        oids = [p.table.oid for p in plan.loads.values()]
        cur.execute(
            "SELECT n.nspname, c.relname FROM pg_depend d JOIN pg_class c ON c.oid = d.objid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE d.classid = 'pg_class'::regclass "
            "AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') AND c.relkind = 'S' "
            "AND d.refobjid = ANY(%s)", (oids,))
        owned = set(cur.fetchall())
        return [s for s in states if (s[0], s[1]) in owned]
    if missing:
        raise SchemaMismatchError("the database schema does not match the backup: sequence(s) missing: "
                                  + ", ".join(missing[:20]))
    return states


def _refuse_broken_references(cur, coverage) -> None:
    broken = []
    for fk, child_restored in coverage:
        if not child_restored:
            broken.append(f"{ops.relation_label(cur, fk.child_oid)} references "
                          f"{ops.relation_label(cur, fk.parent_oid)} ({fk.name})")
    if broken:
        raise UsageError(
            "restoring only these tables would break foreign keys: " + "; ".join(broken),
            hint="Add the referencing tables with more --table options, or restore the whole backup.",
        )


__all__ = ["restore_backup", "BackupError", "sql"]
