"""create_backup: every data table and large object, in one snapshot, streamed to a gzip JSON file.

The file is written under a hidden temporary name and given its backup name only when complete (with its SHA-256
sidecar and its manifest), so a reader never sees half a backup under a backup name.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .. import __version__, dsn
from ..archive.reader import LARGE_OBJECT_COLUMNS, LARGE_OBJECTS
from ..archive.writer import ArchiveWriter
from ..manifest import Manifest
from ..memory import pin_mmap_threshold
from ..models import (
    LARGE_OBJECTS_FORMAT_VERSION,
    BackupMetadata,
    BackupResult,
    LargeObjectsInfo,
    NotIncludedItem,
    SequenceState,
    TableReport,
    TableSchema,
)
from ..pg.connection import connection
from ..pg.largeobjects import read_chunks
from ..pg.snapshot import END, SnapshotInfo, iter_table_batches, open_backup_snapshot
from ..progress import Progress, ProgressFn, Throttle
from .destination import Destination, LocalDestination, begin_sealed, stored_digest, writing
from .options import EngineOptions

DEFAULT_OUTPUT_DIR = Path("./backups")  # the seed's default


def create_backup(output_dir: Path | None = None, *, database_url: str, progress: ProgressFn | None = None,
                  options: EngineOptions = EngineOptions()) -> Path:
    """Back up the database to `output_dir` (default ./backups) and return the file's path.

    Raises a BackupError (a RuntimeError) when the backup cannot be made; no partial file is left.
    """
    return Path(run_backup(output_dir, database_url=database_url, progress=progress, options=options).path)


def run_backup(output_dir: Path | None = None, *, database_url: str, progress: ProgressFn | None = None,
               options: EngineOptions = EngineOptions(), destination: Destination | None = None) -> BackupResult:
    """Back up into `destination` (default: the directory `output_dir`, else ./backups)."""
    pin_mmap_threshold()
    destination = destination or LocalDestination(Path(output_dir) if output_dir is not None else DEFAULT_OUTPUT_DIR)
    started = time.monotonic()
    destination.prepare()
    with connection(database_url) as conn:
        snap = open_backup_snapshot(conn, options.lock_timeout_s)
        metadata = backup_metadata(snap, dsn.parse(database_url).host)
        with writing(destination):
            sink = begin_sealed(destination, snap.taken_at, snap.migration_version, options.keys)
            writer = ArchiveWriter(sink=sink, compresslevel=options.compress_level)
            try:
                writer.begin(metadata_document(metadata))
                written = _write_tables(writer, conn, snap, options, Throttle(progress), database_url)
                lo_bytes = _write_large_objects(writer, conn, snap, options, Throttle(progress))
                compressed, digest = stored_digest(sink, writer.finish())
            except BaseException:
                writer.close()
                raise
            result = BackupResult(
                path="", name="", timestamp=snap.taken_at, migration_version=snap.migration_version,
                database_name=snap.database, tables=written, total_rows=sum(r.rows for r in written),
                uncompressed_bytes=writer.uncompressed_bytes, compressed_bytes=compressed, sha256=digest,
                duration_s=0.0, large_objects=len(snap.large_objects), large_object_bytes=lo_bytes,
                not_included=metadata.not_included, recipients=list(options.keys.recipients),
            )
            name, where = destination.publish(digest, manifest_of(result, metadata))
    return result.model_copy(update={"name": name, "path": where,
                                     "duration_s": round(time.monotonic() - started, 3)})


def backup_metadata(snap: SnapshotInfo, host: str) -> BackupMetadata:
    tables = snap.catalog.tables
    return BackupMetadata(
        timestamp=snap.taken_at, migration_version=snap.migration_version, database_name=snap.database,
        database_host=host, server_version=snap.server_version, tool_version=__version__,
        format_version=LARGE_OBJECTS_FORMAT_VERSION if snap.large_objects else 1,
        contents=[TableSchema(key=t.key, schema=t.schema, name=t.name, columns=[c.name for c in t.data_columns],
                              column_types=[c.type_name for c in t.data_columns], filter=t.filter) for t in tables],
        sequences=[SequenceState(schema=s.schema, name=s.name, last_value=v, is_called=c)
                   for s, v, c in snap.sequences],
        large_objects=LargeObjectsInfo(count=len(snap.large_objects)) if snap.large_objects else None,
        not_included=[NotIncludedItem(**n.to_dict()) for n in snap.not_included],
    )


def metadata_document(metadata: BackupMetadata) -> dict[str, Any]:
    """The metadata as the file holds it. Fields that only say "nothing of this kind" are left out, so a backup of
    a database without large objects, filters or left-out relations is the document older versions wrote."""
    meta = metadata.model_dump(mode="json", by_alias=True)
    taken_at = metadata.timestamp
    meta["timestamp"] = taken_at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{taken_at.microsecond // 1000:03d}Z"
    for key in ("large_objects", "not_included"):
        if not meta[key]:
            del meta[key]
    for entry in meta["contents"]:
        if entry["filter"] is None:
            del entry["filter"]
    return meta


def table_header(table) -> dict[str, Any]:
    header = {"schema": table.schema, "name": table.name, "columns": [c.name for c in table.data_columns],
              "column_types": [c.type_name for c in table.data_columns]}
    if table.filter:
        header["filter"] = table.filter
    return header


def _write_tables(writer: ArchiveWriter, conn, snap: SnapshotInfo, options: EngineOptions,
                  report: Throttle, url: str) -> list[TableReport]:
    tables = snap.catalog.tables
    total_estimate = sum(t.estimated_rows for t in tables) or None
    reports: list[TableReport] = []
    done_rows, current = 0, -1
    for index, batch, sizer in iter_table_batches(conn, tables, options.batch_bytes, url=url):
        table = tables[index]
        if index != current:
            current = index
            writer.begin_table(table.key, table_header(table))
        if batch is END:
            rows, size = writer.end_table()
            reports.append(TableReport(name=table.key, rows=rows, bytes=size))
            continue
        before = writer.uncompressed_bytes
        done_rows += writer.write_rows(batch)
        sizer.observe(len(batch), writer.uncompressed_bytes - before)
        report(Progress("backup", table.key, done_rows, total_estimate, writer.uncompressed_bytes))
    report.flush()
    return reports


def _write_large_objects(writer: ArchiveWriter, conn, snap: SnapshotInfo, options: EngineOptions,
                         report: Throttle) -> int:
    """The large objects' chunks after the tables, in the same snapshot; returns their bytes."""
    if not snap.large_objects:
        return 0
    writer.begin_large_objects({"columns": LARGE_OBJECT_COLUMNS})
    data_bytes = chunks = 0
    with conn.cursor() as cur:
        for batch in read_chunks(cur, snap.large_objects, options.batch_bytes):
            chunks += writer.write_rows(batch)
            data_bytes += sum((len(row[3]) - 2) // 2 for row in batch)
            report(Progress("backup", LARGE_OBJECTS, chunks, None, writer.uncompressed_bytes,
                            message=f"large objects: {data_bytes:,} bytes"))
    writer.end_table()
    report.flush()
    return data_bytes


def manifest_of(result: BackupResult, metadata: BackupMetadata) -> Manifest:
    return Manifest(
        name=result.name, sha256=result.sha256, compressed_bytes=result.compressed_bytes,
        uncompressed_bytes=result.uncompressed_bytes, timestamp=result.timestamp,
        database_name=result.database_name, database_host=metadata.database_host,
        migration_version=result.migration_version, tool_version=metadata.tool_version,
        format_version=metadata.format_version, tables={t.name: t.rows for t in result.tables},
        total_rows=result.total_rows, large_objects=result.large_objects,
        large_object_bytes=result.large_object_bytes,
        not_included=[n.model_dump() for n in result.not_included], recipients=list(result.recipients),
    )


