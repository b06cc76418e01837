"""The engine's options, built from the settings: the edge where configuration becomes arguments."""

from __future__ import annotations

from ..archive.encryption import Keys, parse_recipients
from ..core.options import EngineOptions
from ..databases import Database
from ..errors import ConfigError
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
        keys=age_keys(s),
    )


def age_keys(s: Settings) -> Keys:
    """BACKUP_AGE_RECIPIENTS and BACKUP_AGE_RECIPIENTS_FILE together (both may be set), and the identity file."""
    recipients: tuple[str, ...] = ()
    if s.BACKUP_AGE_RECIPIENTS:
        recipients += parse_recipients(s.BACKUP_AGE_RECIPIENTS, "BACKUP_AGE_RECIPIENTS")
    if s.BACKUP_AGE_RECIPIENTS_FILE:
        where = f"BACKUP_AGE_RECIPIENTS_FILE {s.BACKUP_AGE_RECIPIENTS_FILE}"
        try:
            text = s.BACKUP_AGE_RECIPIENTS_FILE.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {where}: {getattr(exc, 'strerror', None) or 'not text'}",
                              hint="Point it at a file of age1… public keys, one per line.") from None
        from_file = parse_recipients(text, where)
        if not from_file:
            raise ConfigError(f"{where} holds no age public key",
                              hint="Point it at a file of age1… public keys, one per line.")
        recipients += from_file
    return Keys(recipients=tuple(dict.fromkeys(recipients)), identity_file=s.BACKUP_AGE_IDENTITY_FILE)


def database_url(db: Database, explicit: str | None = None) -> str:
    """The database a job works on: the URL it was given (--database-url), else the selected database's."""
    return explicit or db.url
