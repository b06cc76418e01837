"""The engine's options, built from the settings: the edge where configuration becomes arguments."""

from __future__ import annotations

from ..core.options import EngineOptions
from ..databases import Database
from ..settings import Settings


def engine_options(s: Settings) -> EngineOptions:
    """From a database's effective settings (its compression level, its jobs...)."""
    return EngineOptions(
        lock_timeout_s=s.BACKUP_LOCK_TIMEOUT_S,
        max_line_bytes=s.BACKUP_MAX_LINE_BYTES,
        compress_level=s.BACKUP_COMPRESSION_LEVEL,
        rebuild_indexes_min_rows=s.BACKUP_REBUILD_INDEXES_MIN_ROWS,
        batch_bytes=s.BACKUP_BATCH_BYTES,
        split_min_bytes=s.BACKUP_SPLIT_MIN_BYTES,
    )


def database_url(db: Database, explicit: str | None = None) -> str:
    """The database a job works on: the URL it was given (--database-url), else the selected database's."""
    return explicit or db.url
