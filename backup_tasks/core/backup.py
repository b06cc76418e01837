"""create_backup: every data table and large object, in one snapshot, streamed to a gzip JSON file.

The file is written under a hidden temporary name and given its backup name only when complete (with its SHA-256
sidecar and its manifest), so a reader never sees half a backup under a backup name.
"""

from __future__ import annotations

import errno
import os
import secrets
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from .. import __version__, dsn
from ..archive.reader import LARGE_OBJECT_COLUMNS, LARGE_OBJECTS
from ..archive.writer import ArchiveWriter
from ..checksum import sidecar_path, write_sidecar
from ..errors import StorageError
from ..manifest import Manifest, manifest_path, write_manifest
from ..memory import pin_mmap_threshold
from ..models import (LARGE_OBJECTS_FORMAT_VERSION, BackupMetadata, BackupResult, LargeObjectsInfo,
                      NotIncludedItem, SequenceState, TableReport, TableSchema)
from ..names import make_name
from ..pg.connection import connection
from ..pg.largeobjects import read_chunks
from ..pg.snapshot import END, SnapshotInfo, iter_table_batches, open_backup_snapshot
from .parts import PART_FILE_PREFIX
from ..progress import Progress, ProgressFn, Throttle
from .options import EngineOptions

DEFAULT_OUTPUT_DIR = Path("./backups")  # the seed's default


def create_backup(output_dir: Path | None = None, *, database_url: str, progress: ProgressFn | None = None,
                  options: EngineOptions = EngineOptions()) -> Path:
    """Back up the database to `output_dir` (default ./backups) and return the file's path.

    Raises a BackupError (a RuntimeError) when the backup cannot be made; no partial file is left.
    """
    return Path(run_backup(output_dir, database_url=database_url, progress=progress, options=options).path)


def run_backup(output_dir: Path | None = None, *, database_url: str, progress: ProgressFn | None = None,
               options: EngineOptions = EngineOptions()) -> BackupResult:
    pin_mmap_threshold()
    out = Path(output_dir) if output_dir is not None else DEFAULT_OUTPUT_DIR
    started = time.monotonic()
    _prepare_directory(out)
    with connection(database_url) as conn:
        snap = open_backup_snapshot(conn, options.lock_timeout_s)
        metadata = backup_metadata(snap, dsn.parse(database_url).host)
        with _partial_file(out, snap.taken_at, options) as writer:
            writer.begin(metadata_document(metadata))
            written = _write_tables(writer, conn, snap, options, Throttle(progress))
            lo_bytes = _write_large_objects(writer, conn, snap, options, Throttle(progress))
            compressed, digest = writer.finish()
            final = _publish(writer.path, out, snap.taken_at)
    result = BackupResult(
        path=str(final), name=final.name, timestamp=snap.taken_at, migration_version=snap.migration_version,
        database_name=snap.database, tables=written, total_rows=sum(r.rows for r in written),
        uncompressed_bytes=writer.uncompressed_bytes, compressed_bytes=compressed, sha256=digest,
        duration_s=round(time.monotonic() - started, 3), large_objects=len(snap.large_objects),
        large_object_bytes=lo_bytes, not_included=metadata.not_included,
    )
    _write_sidecars(final, digest, manifest_of(result, metadata))
    return result


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
                  report: Throttle) -> list[TableReport]:
    tables = snap.catalog.tables
    total_estimate = sum(t.estimated_rows for t in tables) or None
    reports: list[TableReport] = []
    done_rows, current = 0, -1
    for index, batch, sizer in iter_table_batches(conn, tables, options.batch_bytes):
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
        not_included=[n.model_dump() for n in result.not_included],
    )


# --- the file on disk -----------------------------------------------------------------------------------

def _prepare_directory(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create backup directory {out}: {exc.strerror}") from None
    _sweep_stale_partials(out)


@contextmanager
def partial_path(out: Path, taken_at: datetime) -> Iterator[Path]:
    """A hidden temporary name in `out` for the backup being written, removed unless the block published it; disk
    errors as StorageErrors (a full disk says so and leaves nothing behind)."""
    tmp = out / f".{make_name(taken_at)}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        yield tmp
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise StorageError(f"no space left while writing the backup to {out}",
                               hint="Free disk space or point BACKUP_DIR elsewhere; no partial file was kept.") from None
        raise StorageError(f"writing the backup to {out} failed: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def _partial_file(out: Path, taken_at: datetime, options: EngineOptions) -> Iterator[ArchiveWriter]:
    """The writer of a hidden temporary file (partial_path), abandoned unless the block finished it."""
    with partial_path(out, taken_at) as tmp:
        try:
            writer = ArchiveWriter(tmp, compresslevel=options.compress_level)
        except OSError as exc:
            raise StorageError(f"cannot write to {out}: {exc.strerror}") from None
        try:
            yield writer
        except BaseException:
            writer.close()
            raise


def _write_sidecars(final: Path, digest: str, manifest: Manifest) -> None:
    """The checksum and the manifest next to the published file; if they cannot be written the backup is taken
    back (a backup without its checksum would be restored unverified)."""
    try:
        write_sidecar(final, digest)
        write_manifest(final, manifest)
    except OSError as exc:
        for path in (final, sidecar_path(final), manifest_path(final)):
            path.unlink(missing_ok=True)
        raise StorageError(f"writing the checksum and manifest of {final.name} failed: {exc.strerror or exc}",
                           hint="Free disk space or check BACKUP_DIR's permissions; the backup was removed.") from None


def _publish(tmp: Path, out: Path, taken_at: datetime) -> Path:
    """Give the finished file its backup name without ever replacing another backup (link fails if taken)."""
    for sequence in range(0, 10000):
        final = out / make_name(taken_at, sequence)
        try:
            os.link(tmp, final)
        except FileExistsError:
            continue
        tmp.unlink()
        _fsync_dir(out)
        return final
    raise StorageError(f"too many backups named for {taken_at:%Y-%m-%d %H:%M:%S} in {out}")


STALE_PARTIAL_S = 3600
# A finished part of a parallel backup may wait for the parts before it for as long as the backup runs.
STALE_PART_S = 24 * 3600


def _sweep_stale_partials(out: Path) -> None:
    """Remove partial files of backups that died (SIGKILL, OOM, power loss) and so could not clean up.

    A running backup writes its partial file continuously, so one untouched for an hour is dead; a part waits
    for assembly at most as long as its backup runs. They never look like backups (hidden); this only gives
    their disk space back."""
    now = time.time()
    stale = [(p, STALE_PARTIAL_S) for p in out.glob(".backup_*.backup.gz.tmp-*")]
    stale += [(p, STALE_PART_S) for p in out.glob(PART_FILE_PREFIX + "*")]
    for partial, age in stale:
        try:
            if partial.stat().st_mtime < now - age:
                partial.unlink()
        except OSError:
            pass


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
