"""create_backup: every data table, in one snapshot, streamed to a gzip JSON file."""

from __future__ import annotations

import errno
import os
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg2

from .. import __version__
from ..archive.writer import ArchiveWriter
from ..checksum import write_sidecar
from ..errors import DatabaseError, StorageError
from ..models import BackupMetadata, BackupResult, SequenceState, TableReport, TableSchema
from ..names import make_name
from ..pg.catalog import read_catalog, read_migration_version, read_sequence_states, server_version
from .. import dsn
from ..pg.connection import connection, pg_error_message, privilege_hint
from ..pg.snapshot import END, begin_snapshot, iter_table_batches, lock_tables
from ..progress import Progress, ProgressFn, Throttle
from ..memory import pin_mmap_threshold
from ..settings import get_settings


def create_backup(output_dir: Path | None = None, *, database_url: str | None = None,
                  progress: ProgressFn | None = None) -> Path:
    """Back up the database to `output_dir` (default BACKUP_DIR) and return the file's path.

    Raises a BackupError (a RuntimeError) when the backup cannot be made; no partial file is left.
    """
    return Path(run_backup(output_dir, database_url=database_url, progress=progress).path)


def run_backup(output_dir: Path | None = None, *, database_url: str | None = None,
               progress: ProgressFn | None = None, compresslevel: int | None = None) -> BackupResult:
    pin_mmap_threshold()
    settings = get_settings()
    url = database_url or settings.database_url
    out = Path(output_dir) if output_dir is not None else settings.BACKUP_DIR
    level = settings.BACKUP_COMPRESSION_LEVEL if compresslevel is None else compresslevel
    report = Throttle(progress)
    started = time.monotonic()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create backup directory {out}: {exc.strerror}") from None
    _sweep_stale_partials(out)

    with connection(url) as conn:
        try:
            begin_snapshot(conn, settings.BACKUP_LOCK_TIMEOUT_S)
            cur = conn.cursor()
            cur.execute("SELECT now(), current_database()")  # the snapshot is taken here
            taken_at, dbname = cur.fetchone()
            catalog = read_catalog(cur)
            lock_tables(cur, catalog.tables)
            migration = read_migration_version(cur, catalog.alembic)
            sequences = read_sequence_states(cur, catalog.sequences)
            version = server_version(cur)
        except psycopg2.Error as exc:
            raise DatabaseError(f"cannot start the backup: {pg_error_message(exc)}",
                                hint=privilege_hint(exc)) from None

        taken_at = taken_at.astimezone(timezone.utc)
        host = dsn.parse(url).host
        metadata = BackupMetadata(
            timestamp=taken_at,
            migration_version=migration,
            database_name=dbname,
            database_host=host,
            server_version=version,
            tool_version=__version__,
            contents=[
                TableSchema(key=t.key, schema=t.schema, name=t.name,
                            columns=[c.name for c in t.data_columns],
                            column_types=[c.type_name for c in t.data_columns])
                for t in catalog.tables
            ],
            sequences=[SequenceState(schema=s.schema, name=s.name, last_value=v, is_called=c)
                       for s, v, c in sequences],
        )
        meta = metadata.model_dump(mode="json", by_alias=True)
        meta["timestamp"] = taken_at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{taken_at.microsecond // 1000:03d}Z"

        tmp = out / f".{make_name(taken_at)}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        reports: list[TableReport] = []
        total_estimate = sum(t.estimated_rows for t in catalog.tables) or None
        try:
            writer = ArchiveWriter(tmp, compresslevel=level)
        except OSError as exc:
            raise StorageError(f"cannot write to {out}: {exc.strerror}") from None
        try:
            writer.begin(meta)
            done_rows = 0
            current = -1
            for index, batch in iter_table_batches(conn, catalog.tables):
                table = catalog.tables[index]
                if index != current:
                    current = index
                    writer.begin_table(table.key, {
                        "schema": table.schema, "name": table.name,
                        "columns": [c.name for c in table.data_columns],
                        "column_types": [c.type_name for c in table.data_columns],
                    })
                if batch is END:
                    rows, size = writer.end_table()
                    reports.append(TableReport(name=table.key, rows=rows, bytes=size))
                    continue
                done_rows += writer.write_rows(batch)
                report(Progress("backup", table.key, done_rows, total_estimate, writer.uncompressed_bytes))
            compressed, digest = writer.finish()
            final = _publish(tmp, out, taken_at)
            write_sidecar(final, digest)
        except OSError as exc:
            writer.close()
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise StorageError(f"no space left while writing the backup to {out}",
                                   hint="Free disk space or point BACKUP_DIR elsewhere; no partial file was kept.") from None
            raise StorageError(f"writing the backup to {out} failed: {exc.strerror or exc}") from None
        except BaseException:
            writer.close()
            tmp.unlink(missing_ok=True)
            raise
        report.flush()

    return BackupResult(
        path=str(final), name=final.name, timestamp=taken_at, migration_version=migration, database_name=dbname,
        tables=reports, total_rows=sum(r.rows for r in reports), uncompressed_bytes=writer.uncompressed_bytes,
        compressed_bytes=compressed, sha256=digest, duration_s=round(time.monotonic() - started, 3),
    )


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


def _sweep_stale_partials(out: Path) -> None:
    """Remove partial files of backups that died (SIGKILL, OOM, power loss) and so could not clean up.

    A running backup writes its partial file continuously, so one untouched for an hour is dead. They never look
    like backups (hidden, `.tmp-` suffix); this only gives their disk space back."""
    cutoff = time.time() - STALE_PARTIAL_S
    for partial in out.glob(".backup_*.backup.gz.tmp-*"):
        try:
            if partial.stat().st_mtime < cutoff:
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
