"""Backup file names: the one place that knows `backup_YYYYMMDD_HHMMSS[_N].backup.gz[.age]`.

`.age` marks a backup encrypted with age (archive/encryption.py); readers decide by the file's own first bytes,
the name only tells listings and people which backups need an identity.

Backups are found by parsing this exact pattern, never by substring, and every name that enters from outside
(CLI, task arguments, S3 listings) goes through validate_name() before it touches a path or a key.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from .errors import UsageError

SUFFIX = ".backup.gz"
ENCRYPTED_SUFFIX = ".age"
CHECKSUM_SUFFIX = ".sha256"
# Small files that travel with a backup, named `<backup name><suffix>`: its SHA-256 (sha256sum format), its
# manifest (manifest.py) and its last restore drill's report. Never backup names themselves.
SIDECARS = {"sha256": CHECKSUM_SUFFIX, "manifest": ".manifest.json", "drill": ".drill.json"}
_NAME_RE = re.compile(r"backup_(\d{8})_(\d{6})(?:_(\d{1,4}))?\.backup\.gz(?:\.age)?")


def make_name(when: datetime, sequence: int = 0, encrypted: bool = False) -> str:
    """Name for a backup taken at `when` (UTC). `sequence` > 0 separates backups taken in the same second."""
    stamp = when.astimezone(UTC).strftime("%Y%m%d_%H%M%S")
    return f"backup_{stamp}{f'_{sequence}' if sequence else ''}{SUFFIX}{ENCRYPTED_SUFFIX if encrypted else ''}"


def is_encrypted_name(name: str) -> bool:
    return is_backup_name(name) and name.endswith(SUFFIX + ENCRYPTED_SUFFIX)


def parse_name(name: str) -> tuple[datetime, int] | None:
    """(creation time in UTC, sequence) for a valid backup name, else None."""
    m = _NAME_RE.fullmatch(name)  # fullmatch: `$` would accept a trailing newline
    if not m:
        return None
    try:
        when = datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return when, int(m.group(3) or 0)


def is_backup_name(name: str) -> bool:
    return parse_name(name) is not None


def validate_name(name: str) -> str:
    """Return `name` if it is a plain backup file name; refuse paths, `..` and anything else."""
    if not isinstance(name, str) or not is_backup_name(name):
        raise UsageError(
            f"not a backup name: {name!r}",
            hint="A backup name looks like backup_20251101_123456.backup.gz (or .backup.gz.age when encrypted; "
                 "no directories).",
        )
    return name


def sidecar_name(name: str, kind: str) -> str:
    return validate_name(name) + SIDECARS[kind]


def sidecar_path(backup: Path, kind: str) -> Path:
    return backup.with_name(backup.name + SIDECARS[kind])


def parse_sidecar(name: str) -> tuple[str, str] | None:
    """(backup name, kind) when `name` is a sidecar of a backup, else None."""
    for kind, suffix in SIDECARS.items():
        if name.endswith(suffix) and is_backup_name(name[: -len(suffix)]):
            return name[: -len(suffix)], kind
    return None
