"""verify_backup: check a file completely without touching any database."""

from __future__ import annotations

from pathlib import Path

from ..archive.encryption import is_encrypted
from ..archive.reader import scan
from ..checksum import check_recorded, read_sidecar, sha256_file
from ..errors import BackupError, DecryptionError, IntegrityError
from ..models import VerifyResult
from ..progress import Progress, ProgressFn, Throttle
from .options import EngineOptions
from .source import with_recipients_hint


def verify_backup(path: Path, *, progress: ProgressFn | None = None, require_checksum: bool = False,
                  options: EngineOptions = EngineOptions()) -> VerifyResult:
    """Checksum (when recorded), gzip integrity, JSON shape, row widths and row counts. Raises on a bad file."""
    path = Path(path)
    report = Throttle(progress)
    recorded = read_sidecar(path)
    if recorded is not None:
        digest = check_recorded(path)  # raises IntegrityError on a mismatch
    else:
        digest = sha256_file(path) if path.is_file() else None
    if recorded is None and require_checksum:
        raise IntegrityError(f"{path.name}: no SHA-256 was recorded for this file")

    def on_progress(reader, header, rows) -> None:
        report(Progress("verify", header.key, rows, None, reader.compressed_done, reader.compressed_size))

    try:
        contents = scan(path, options.max_line_bytes, on_progress, keys=options.keys)
    except DecryptionError as exc:
        raise with_recipients_hint(exc, path, options.keys) from None
    report.flush()
    meta = contents.metadata
    return VerifyResult(
        ok=True, name=path.name, timestamp=meta.timestamp, migration_version=meta.migration_version,
        format_version=meta.format_version, tables=len(contents.tables), rows=contents.total_rows,
        uncompressed_bytes=contents.uncompressed_bytes, sha256=digest,
        checksum="ok" if recorded else "missing", encrypted=_is_age_file(path),
    )


def _is_age_file(path: Path) -> bool:
    with open(path, "rb") as f:
        return is_encrypted(f)


__all__ = ["BackupError", "verify_backup"]
