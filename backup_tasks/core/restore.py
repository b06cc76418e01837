"""restore_backup: replace the database's data with a backup's, all-or-nothing in one transaction.

The statements are pg/restore_tx.py's; this module decides what is restored (core/plan.py), streams the file's
rows to the transaction's COPYs, and reports. Any failure rolls everything back.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..archive.copytext import encode_rows
from ..archive.reader import LARGE_OBJECTS, BackupReader, Contents
from ..errors import InvalidBackupError
from ..memory import pin_mmap_threshold
from ..models import LARGE_OBJECTS_FORMAT_VERSION, DiffSummary, RestoredTable, RestoreResult
from ..pg.copy_in import TableLoad, copy_statement
from ..pg.restore_tx import RestoreTransaction, restore_transaction
from ..progress import Progress, ProgressFn, Throttle, no_progress
from .diff import calculate_diff, counts_summary
from .options import EngineOptions
from .plan import RestorePlan, plan_restore
from .source import BackupSource, open_source

# A table is "big" (its indexes are built again after the load rather than maintained during it) when it holds
# at least EngineOptions.rebuild_indexes_min_rows rows, or this many bytes of rows.
BIG_TABLE_BYTES = 4 << 20


def restore_backup(backup_path: Path, show_diff: bool = True, *, database_url: str, dry_run: bool = False,
                   tables: list[str] | None = None, progress: ProgressFn | None = None,
                   options: EngineOptions = EngineOptions(), large_objects: bool | None = None,
                   before_commit: Callable[[], None] | None = None,
                   source: BackupSource | None = None) -> RestoreResult:
    """Restore the backup into the database at `database_url`.

    show_diff reports the seed's per-table row counts (result.diff: the database's counted in the restore's own
    transaction just before it empties the tables, the backup's the rows it loaded; the file is read once);
    dry_run computes the full row-level diff and changes nothing.
    large_objects: None restores them with a full restore and leaves them alone with `tables`; True/False force.
    before_commit: raises to roll back at the last moment (the caller's job lock was lost, say).
    source: the file already opened (open_source: its checksum checked), so a drill does not hash it twice.
    Raises a BackupError (a RuntimeError); on any failure nothing was changed.
    """
    pin_mmap_threshold()
    started = time.monotonic()
    source = source or open_source(Path(backup_path), options.max_line_bytes,
                                   keys=options.keys)  # a changed file is refused here
    tables = tables or None
    with_objects = _restores_large_objects(source, tables, large_objects)
    if dry_run:
        return _dry_run(source, database_url, tables, with_objects, options, progress, started)
    with restore_transaction(database_url, options.lock_timeout_s) as tx:
        plan = plan_restore(source.contents, tx.catalog, tables)
        sequences = _sequence_states(tx, source, plan, tables)
        if tables:
            tx.refuse_broken_references(plan.targets)
        views = tx.materialized_views(plan.targets) if options.refresh_views else []
        counted = tx.prepare(plan.targets, migration_version=source.contents.metadata.migration_version,
                             set_migration=not tables, large_objects=with_objects, count=show_diff)
        loaded = _load(tx, source, plan, options, progress, with_objects)
        finished = tx.finish(sequences, plan.targets, views, progress or no_progress,
                             expected_large_objects=source.contents.large_objects if with_objects else None,
                             before_commit=before_commit)
    diff = _counts_preface(source, tx, counted, loaded, tables) if counted is not None else None
    return _result(source, tx, plan, loaded, finished, diff, with_objects, started)


def _counts_preface(source: BackupSource, tx: RestoreTransaction, counted: tuple[dict[str, int], int],
                    loaded: list[RestoredTable], tables: list[str] | None) -> DiffSummary:
    """The seed's counts diff, of what this restore replaced: the database's side counted in its transaction
    before the tables were emptied, the backup's the rows it loaded (checked against the file's own counts as
    they were read), so neither a second pass over the file nor the manifest is needed."""
    rows = {t.name: t.rows for t in loaded}
    contents = Contents(source.contents.metadata, [replace(h, row_count=rows.get(h.key, h.row_count or 0))
                                                   for h in source.contents.tables], source.contents.uncompressed_bytes)
    current, objects_now = counted
    return counts_summary(source, contents, tx.catalog, tx.migration_version, current, objects_now, tables)


def _restores_large_objects(source: BackupSource, tables: list[str] | None, asked: bool | None) -> bool:
    """Whether this restore replaces the database's large objects. A file written before backup_tasks kept them
    (format version 1 from a tool older than 0.2.0, or another writer) says nothing about them: the database's
    are left as they are rather than removed for a backup that never had them."""
    if asked is not None:
        return asked and _knows_large_objects(source)
    return tables is None and _knows_large_objects(source)


def _knows_large_objects(source: BackupSource) -> bool:
    meta = source.contents.metadata
    if meta.format_version >= LARGE_OBJECTS_FORMAT_VERSION:
        return True
    version = tuple(int(p) for p in (meta.tool_version or "0").split(".")[:2] if p.isdigit())
    return meta.format == "backup_tasks" and version >= (0, 2)


def _sequence_states(tx: RestoreTransaction, source: BackupSource, plan: RestorePlan,
                     tables: list[str] | None) -> list[tuple[str, str, int, bool]] | None:
    """The recorded sequence states to set, or None when the file records none (a file in the seed's bare
    format, whose metadata has no `sequences` field): then the restore derives them from the restored rows,
    or the application's next INSERT into a serial or identity column would collide with a restored row."""
    meta = source.contents.metadata
    if "sequences" not in meta.model_fields_set:
        return None
    recorded = [(s.schema_name, s.name, s.last_value, s.is_called) for s in meta.sequences]
    return tx.sequence_states(recorded, [p.table for p in plan.loads.values()], partial=bool(tables))


def _load(tx: RestoreTransaction, source: BackupSource, plan: RestorePlan, options: EngineOptions,
          progress: ProgressFn | None, with_objects: bool) -> list[RestoredTable]:
    report = Throttle(progress)
    restored: list[RestoredTable] = []
    total_rows = source.manifest.total_rows if source.manifest else None
    with BackupReader(source.path, options.max_line_bytes, parse_rows=not source.trusted,
                      keys=source.keys) as reader:
        def on_chunk(mark: Any) -> None:
            key, rows = mark
            report(Progress("restore", key, rows, total_rows, reader.compressed_done, reader.compressed_size))

        def on_table(load: TableLoad) -> None:
            if load.table is not None:
                restored.append(RestoredTable(name=load.key, rows=load.rows))

        stream = _LoadStream(reader, plan, {t.key for t in source.contents.tables},
                             options.rebuild_indexes_min_rows, tx.large_objects_copy if with_objects else None)
        tx.load(stream, on_chunk=on_chunk, on_table=on_table)
        if not reader.finished:
            raise InvalidBackupError(f"{source.path.name} ended before the document was complete")
        if with_objects and source.contents.large_objects and not stream.saw_large_objects:
            raise InvalidBackupError(f"{source.path.name}: its metadata lists large objects its data lacks")
    report.flush()
    return restored


class _LoadStream:
    """Runs in the producer thread: each table of the file, checked against the plan, as encoded chunks; then
    the large objects' chunk rows, for the staging table.

    Before a table is handed over, its first blocks are read ahead until it is known to be big: the table list
    at the head of the file has no row counts (they follow each table's rows), and the indexes must be dropped
    before its COPY starts. At most ~BIG_TABLE_BYTES are held for that."""

    def __init__(self, reader: BackupReader, plan: RestorePlan, expected: set[str], big_rows: int,
                 objects_copy: Any):
        self.reader, self.plan, self.expected = reader, plan, expected
        self.big_rows, self.objects_copy = big_rows, objects_copy
        self.saw_large_objects = False

    def __iter__(self) -> Iterator[tuple[TableLoad, Iterator[tuple[bytes, Any]]]]:
        # The tables may come in any order: JSON objects are unordered, and a file re-serialised by another tool
        # (sorted keys, say) is still the same document. Every table must be listed in the metadata, exactly once
        # (the reader refuses duplicate keys), and all of them must be there.
        name = self.reader.path.name
        expected = self.expected
        seen: set[str] = set()
        for table in self.reader.tables():
            header = table.header
            if header.kind == LARGE_OBJECTS:
                yield from self._large_objects(table)
                continue
            if header.key not in expected:
                raise InvalidBackupError(f"{name}: table {header.key!r} is not listed in its metadata")
            seen.add(header.key)
            load = self._table_load(table)
            if load is not None:
                yield load
        if seen != expected:
            missing = sorted(expected - seen)
            raise InvalidBackupError(f"{name} lacks tables its metadata lists: {', '.join(missing[:5])}")

    def _table_load(self, table) -> tuple[TableLoad, Iterator[tuple[bytes, Any]]] | None:
        header = table.header
        target = self.plan.loads.get(header.key)
        if target is None:  # not selected with --table: read past it
            for _ in table.batches():
                pass
            return None
        if header.columns != target.header.columns:
            raise InvalidBackupError(f"{self.reader.path.name}: table {header.key!r} has other columns than the "
                                     "metadata lists")
        load = TableLoad(header.key, copy_statement(target.table.ident, header.columns), target.table)
        batches = table.batches()
        ahead, rows, size = [], 0, 0
        for batch in batches:
            ahead.append(batch)
            rows += len(batch)
            size += len(getattr(batch, "raw", None) or b"")
            if rows >= self.big_rows or size >= BIG_TABLE_BYTES:
                break
        load.big = rows >= self.big_rows or size >= BIG_TABLE_BYTES
        return load, _encoded(itertools.chain(ahead, batches), load, len(header.columns))

    def _large_objects(self, table) -> Iterator[tuple[TableLoad, Iterator[tuple[bytes, Any]]]]:
        self.saw_large_objects = True
        if self.objects_copy is None:
            for _ in table.batches():
                pass
            return
        load = TableLoad("large objects", self.objects_copy)
        yield load, _encoded(table.batches(), load, len(table.header.columns))


def _encoded(batches: Iterator[Any], load: TableLoad, width: int) -> Iterator[tuple[bytes, Any]]:
    for batch in batches:
        load.rows += len(batch)
        data = encode_rows(batch, width)
        del batch  # not held while the reader reads the next block (a multi-MB row: one row more in memory)
        yield data, (load.key, load.rows)
        del data  # sent or queued by now: not held while the next block is encoded


def _dry_run(source: BackupSource, url: str, tables: list[str] | None, with_objects: bool,
             options: EngineOptions, progress: ProgressFn | None, started: float) -> RestoreResult:
    """Refuse what the restore would refuse before changing anything (tables, columns or sequences the database
    lacks), list the materialized views it would refresh, and compute the full diff. Nothing is changed."""
    with restore_transaction(url, options.lock_timeout_s) as tx:
        plan = plan_restore(source.contents, tx.catalog, tables)
        _sequence_states(tx, source, plan, tables)
        views = tx.materialized_views(plan.targets) if options.refresh_views else []
    diff = calculate_diff(source.path, database_url=url, detailed=True, progress=progress, tables=tables,
                          options=options, source=source, large_objects=with_objects)
    meta = source.contents.metadata
    return RestoreResult(
        success=True, dry_run=True, restored_tables=0, restored_rows=0,
        message="Dry run: nothing was changed.", backup_name=source.path.name, backup_timestamp=meta.timestamp,
        migration_version_before=diff.current_migration_version, migration_version_after=meta.migration_version,
        diff=diff, duration_s=round(time.monotonic() - started, 3),
        views_refreshed=[v.label for v in views if v.may_refresh],
        views_not_refreshed=[v.label for v in views if not v.may_refresh],
    )


def _result(source: BackupSource, tx: RestoreTransaction, plan: RestorePlan, restored: list[RestoredTable],
            finished, diff, with_objects: bool, started: float) -> RestoreResult:
    meta = source.contents.metadata
    rows = sum(t.rows for t in restored)
    written = finished.large_objects
    return RestoreResult(
        success=True, restored_tables=len(restored), restored_rows=rows,
        message=f"Restore completed: {len(restored)} tables, {rows} rows"
                + (f", {written.objects} large objects" if written and written.objects else ""),
        backup_name=source.path.name, backup_timestamp=meta.timestamp,
        migration_version_before=tx.migration_version,
        migration_version_after=meta.migration_version if tx.migration_set else tx.migration_version,
        truncated=[t.key for t in plan.targets], tables=restored, sequences_restored=finished.sequences_set,
        triggers_mode="disabled user triggers during load" if tx.prepared.triggers else None,
        diff=diff, duration_s=round(time.monotonic() - started, 3),
        views_refreshed=finished.views_refreshed, views_not_refreshed=finished.views_not_refreshed,
        large_objects=_objects_note(source, with_objects, finished), phase_s=finished.phase_s,
    )


def _objects_note(source: BackupSource, with_objects: bool, finished) -> dict[str, Any]:
    written = finished.large_objects
    if with_objects and written is not None:
        return {"restored": written.objects, "bytes": written.bytes, "removed": finished.large_objects_removed,
                "owners_missing": written.owners_missing}
    reason = ("not asked for (--table restores tables only; add --large-objects)" if _knows_large_objects(source)
              else "left as they are: the backup was made by a version that did not keep large objects")
    return {"restored": 0, "skipped": reason}
