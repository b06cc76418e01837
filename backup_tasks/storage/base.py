"""The one storage interface. Local directory and S3 implement it; retention and the jobs use only this.

Names are always plain backup names (names.validate_name); an implementation never builds a path or key from
anything else. Every put records the file's SHA-256, every get checks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Iterator, Protocol, runtime_checkable


@dataclass(frozen=True)
class BackupInfo:
    name: str
    size: int
    created_at: datetime  # from the name (UTC), never from mtime
    sha256: str | None = None
    migration_version: str | None = None
    location: str = "local"  # "local" | "s3"


@runtime_checkable
class Storage(Protocol):
    kind: str

    def list(self) -> list[BackupInfo]:
        """Backups of this tool, newest first. Anything that is not a backup name is ignored."""

    def put(self, local_path: Path) -> BackupInfo:
        """Store a local backup file under its own name, recording its SHA-256."""

    def get(self, name: str, dest_dir: Path) -> Path:
        """Copy a backup to dest_dir (temp file + rename), verify its SHA-256, return the path."""

    def open(self, name: str) -> BinaryIO:
        """A readable binary stream of the stored bytes."""

    def delete(self, name: str) -> None:
        """Delete a backup and its recorded checksum."""

    def checksum(self, name: str) -> str | None:
        """The SHA-256 recorded at creation, or None if none was recorded."""

    def exists(self, name: str) -> bool: ...


def iter_chunks(stream: BinaryIO, size: int = 1024 * 1024) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk
