"""The one storage interface. Local directory and S3 implement it; retention and the jobs use only this.

A storage knows bytes and names, never the backup format: what a backup holds (its migration version, its rows)
is read by the caller through `archive` or the manifest. Names are always plain backup names
(names.validate_name); an implementation never builds a path or key from anything else. Every put records the
file's SHA-256, every get checks it.

Sidecars: for a backup N, the small files `N + names.SIDECARS[kind]` travel with it. The checksum is each
storage's own business (a `N.sha256` file locally, object metadata on S3); the others (CALLER_SIDECARS: the
manifest, the drill report) are stored as they are, next to the backup, by put / put_sidecar, fetched by get /
get_sidecar and removed by delete. A backup is listed by its own data only, so a sidecar whose backup is gone
(a crash between two deletes) never makes it look present; delete removes the data first for that reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from ..errors import StorageError, UsageError
from ..names import SIDECARS, sidecar_name
from ..progress import ProgressFn

# The sidecars callers put and get; "sha256" is recorded by put and checked by get, never written by a caller.
CALLER_SIDECARS = tuple(kind for kind in SIDECARS if kind != "sha256")
# The largest sidecar put_sidecar accepts and get_sidecar returns: manifest.MAX_BYTES (a manifest of a million
# tables); anything larger under a sidecar's name is not one of ours.
SIDECAR_MAX_BYTES = 64 << 20


@dataclass(frozen=True)
class BackupInfo:
    name: str
    size: int
    created_at: datetime  # from the name (UTC), never from mtime
    sha256: str | None = None  # recorded checksum; on S3 only when listed with details (a HEAD per backup)
    migration_version: str | None = None  # filled by whoever reads it: put's caller, S3 metadata, jobs/listing
    location: str = "local"  # the storage's kind: "local" | "s3"
    sidecars: frozenset[str] = frozenset()  # kinds of names.SIDECARS stored next to it, seen in the listing itself
    unreadable: str | None = None  # why its head could not be read, when a listing tried (jobs/listing.py)


@dataclass(frozen=True)
class Verification:
    """Whether a stored backup's checksum verifies, as far as its storage can tell without downloading it."""

    ok: bool
    detail: str  # why: "SHA-256 matches the sidecar", "no SHA-256 recorded", "size 10 differs from the recorded 12"


@runtime_checkable
class Storage(Protocol):
    kind: str  # "local" | "s3": a label for reports and BackupInfo.location, never a reason to branch

    def location(self) -> str:
        """Where the backups are, for messages and reports: a directory, or s3://bucket/prefix/."""

    def list(self, details: bool = False) -> list[BackupInfo]:
        """Backups of this tool, newest first, each with the sidecars the listing shows next to it. Anything that
        is not a backup name (or a sidecar of a listed one) is ignored. One listing: a directory scan, or one
        ListObjectsV2 request per 1,000 keys. details=True also reads what only a request per backup can tell
        (S3: sha256 and migration version from the object's metadata); locally the sidecar is read either way."""

    def put(self, local_path: Path, progress: ProgressFn | None = None,
            migration_version: str | None = None) -> BackupInfo:
        """Store a local backup file under its own name, recording its SHA-256 (refused when it differs from
        its local sidecar), then the CALLER_SIDECARS present next to it. `migration_version`, as the caller read
        it from the file, is recorded where the storage keeps metadata (S3) and returned in the BackupInfo."""

    def get(self, name: str, dest_dir: Path, progress: ProgressFn | None = None) -> Path:
        """Copy a backup to dest_dir (temp file + rename), verify its SHA-256, write its `.sha256` sidecar and
        copy the CALLER_SIDECARS it has; return the backup's path."""

    def open(self, name: str) -> BinaryIO:
        """A readable binary stream of the stored bytes."""

    def delete(self, name: str) -> None:
        """Delete a backup, then its sidecars and recorded checksum. Idempotent."""

    def checksum(self, name: str) -> str | None:
        """The SHA-256 recorded at creation, or None if none was recorded."""

    def exists(self, name: str) -> bool: ...

    def verify(self, name: str) -> Verification:
        """Whether the backup's checksum verifies. Local: the file's SHA-256 against its sidecar (reads the
        file). S3: a SHA-256 is recorded in the object's metadata and the recorded size, if any, matches."""

    def put_sidecar(self, name: str, kind: str, data: bytes) -> None:
        """Store a sidecar (a kind of CALLER_SIDECARS, at most SIDECAR_MAX_BYTES) of an existing backup,
        replacing any earlier one atomically."""

    def get_sidecar(self, name: str, kind: str) -> bytes | None:
        """A sidecar's bytes (a kind of CALLER_SIDECARS), or None when the backup has none."""


def caller_sidecar_name(name: str, kind: str) -> str:
    """`name + suffix` for a sidecar callers may put and get; refuses the checksum and unknown kinds."""
    if kind not in CALLER_SIDECARS:
        raise UsageError(f"not a sidecar kind callers store: {kind!r}",
                         hint=f"Use one of: {', '.join(CALLER_SIDECARS)}.")
    return sidecar_name(name, kind)


def check_sidecar_size(name: str, size: int, *, reading: bool) -> None:
    """Refuse a sidecar larger than SIDECAR_MAX_BYTES: a caller's mistake when putting, a foreign file when read."""
    if size <= SIDECAR_MAX_BYTES:
        return
    limit = f"the {SIDECAR_MAX_BYTES >> 20} MB a sidecar may be"
    if reading:
        raise StorageError(f"sidecar {name} is {size} bytes, more than {limit}: not one of this tool's",
                           hint="Remove or rename that file/object; the backup itself is not affected.")
    raise UsageError(f"sidecar {name} is {size} bytes, more than {limit}",
                     hint="A sidecar is a small summary next to a backup; store large data elsewhere.")


def iter_chunks(stream: BinaryIO, size: int = 1024 * 1024) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk
