"""Storage jobs: list, upload, download, restore/verify from S3, cleanup. JSON-safe arguments in, dicts out.

Every name that arrives here is validated before it touches a path or key; the storages validate again.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import databases
from ..archive.header import read_migration_version
from ..checksum import read_sidecar
from ..errors import BackupError, InvalidBackupError, UsageError
from ..manifest import read_manifest
from ..names import is_encrypted_name, validate_name
from ..progress import ProgressFn, no_progress
from ..retention import RetentionPolicy, apply_policy
from ..storage.base import BackupInfo, Storage
from ..storage.factory import local_storage, s3_storage
from . import Database, job
from .listing import newest_verified, with_migration_versions
from .results import (
    CleanupJobResult,
    CleanupLocation,
    DownloadJobResult,
    DrillStatus,
    ListingJobResult,
    S3Source,
    StoredBackup,
    UploadJobResult,
    VerifiedNewest,
)

TARGETS = ("local", "s3", "all")


def stored(info: BackupInfo) -> StoredBackup:
    return StoredBackup(name=info.name, size=info.size, created_at=info.created_at, sha256=info.sha256,
                        migration_version=info.migration_version, location=info.location,
                        sidecars=sorted(info.sidecars), unreadable=info.unreadable)


def _listing(storage: Storage, backups: list[BackupInfo], details: bool) -> dict[str, Any]:
    return ListingJobResult(location=storage.kind, where=storage.location(), details=details,
                            backups=[_with_drill(storage, i) for i in backups]).model_dump(mode="json")


def _with_drill(storage: Storage, info: BackupInfo) -> StoredBackup:
    """The backup with its last drill: one read (a GET on S3) per backup the listing shows a report for."""
    out = stored(info)
    if "drill" in info.sidecars:
        try:
            out.drill = DrillStatus.of(storage.get_sidecar(info.name, "drill"))
        except BackupError as exc:
            out.drill = DrillStatus(outcome="unreadable", detail=exc.message)
    return out


@job("list_local")
def list_local(*, db: Database, progress: ProgressFn = no_progress) -> dict[str, Any]:
    storage = local_storage(db.config)  # a listing needs no URL: `config`, so a database without one still lists
    # Each file's head is read (bounded) for its migration version: a local open costs next to nothing.
    return _listing(storage, with_migration_versions(storage, storage.list()), True)


@job("list_s3")
def list_s3(*, db: Database, long: bool = False, progress: ProgressFn = no_progress) -> dict[str, Any]:
    """One ListObjectsV2 request per 1,000 keys; `long` adds a HEAD per backup for its metadata (checksum and
    migration version recorded at upload)."""
    storage = s3_storage(db.config)
    return _listing(storage, storage.list(details=long), long)


@job("upload")
def upload(*, file: str, db: Database, progress: ProgressFn = no_progress, allow_paths: bool = True
           ) -> dict[str, Any]:
    from .db import resolve_backup_file

    path = resolve_backup_file(file, db.config.BACKUP_DIR, allow_paths=allow_paths)
    validate_name(path.name)  # the object is stored under the file's own name
    storage = s3_storage(db.config)
    # The local file is only read: a failed upload leaves it exactly as it was.
    info = storage.put(path, progress=progress, migration_version=_migration_version(path))
    return UploadJobResult(**stored(info).model_dump(), source=str(path), url=storage.url(info.name)
                           ).model_dump(mode="json")


def _migration_version(path: Path) -> str | None:
    """The version to record with an upload; a file whose head cannot be read is still uploaded, without one.
    An encrypted backup's comes from its manifest: uploading needs no secret key."""
    if is_encrypted_name(path.name):
        manifest = read_manifest(path)
        return manifest.migration_version if manifest is not None else None
    try:
        with open(path, "rb") as stream:
            return read_migration_version(stream)
    except (InvalidBackupError, OSError):
        return None


@job("download")
def download(*, name: str, db: Database, progress: ProgressFn = no_progress) -> dict[str, Any]:
    validate_name(name)
    storage = s3_storage(db.config)
    path = storage.get(name, db.config.BACKUP_DIR, progress=progress)
    # get() verified the bytes against the recorded checksum and wrote it as the sidecar, if there was one.
    checksum = "ok" if read_sidecar(path) else "missing"
    return DownloadJobResult(name=name, path=str(path), size=path.stat().st_size, url=storage.url(name),
                             checksum=checksum).model_dump(mode="json")


@contextmanager
def downloaded_to_temp(name: str, progress: ProgressFn, db: Database | None = None
                       ) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Download an S3 backup into a private temp dir (checksum verified by get) that is removed whatever happens."""
    validate_name(name)
    db = db or databases.select()
    storage = s3_storage(db.config)
    # Inside BACKUP_DIR rather than /tmp: backups can be large and /tmp is often a small RAM disk. Not next to it:
    # nothing may be written outside BACKUP_DIR (its parent may not even be ours). The hidden `.backup-s3-*`
    # directory is never a backup name, so listings and retention ignore it.
    backup_dir = db.config.BACKUP_DIR
    backup_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".backup-s3-", dir=backup_dir) as tmp:
        path = storage.get(name, Path(tmp), progress=progress)
        yield path, S3Source(url=storage.url(name), sha256=read_sidecar(path)).model_dump(mode="json")


@job("restore_s3")
def restore_s3(
    *,
    name: str,
    db: Database,
    dry_run: bool = False,
    database_url: str | None = None,
    tables: list[str] | None = None,
    show_diff: bool = True,
    refresh_views: bool = True,
    large_objects: bool | None = None,
    progress: ProgressFn = no_progress,
) -> dict[str, Any]:
    from .db import restore_file

    # The lock is taken after the download (restore_file): a restore elsewhere need not wait for the transfer.
    with downloaded_to_temp(name, progress, db) as (path, source):
        return restore_file(str(path), db=db, database_url=database_url, dry_run=dry_run, tables=tables,
                            show_diff=show_diff, refresh_views=refresh_views, large_objects=large_objects,
                            progress=progress, job_name="restore_s3", source=source)


@job("verify_s3")
def verify_s3(*, name: str, db: Database, progress: ProgressFn = no_progress) -> dict[str, Any]:
    from .db import verify_file

    with downloaded_to_temp(name, progress, db) as (path, source):
        return verify_file(str(path), progress=progress, db=db, source=source)


@job("cleanup")
def cleanup(*, db: Database, dry_run: bool = False, target: str = "all", progress: ProgressFn = no_progress
            ) -> dict[str, Any]:
    """The database's retention policy on the database's own directory and prefix, nothing else."""
    if target not in TARGETS:
        raise UsageError(f"unknown cleanup target {target!r}", hint="Use one of: local, s3, all.")
    settings = db.config
    policy = RetentionPolicy.from_settings(settings)
    now = datetime.now(UTC)
    locations: dict[str, CleanupLocation] = {}
    storages = []
    if target in ("local", "all"):
        storages.append(local_storage(settings))
    if target == "s3" or (target == "all" and settings.s3_enabled):
        storages.append(s3_storage(settings))
    elif target == "all":
        locations["s3"] = CleanupLocation(skipped="S3_BUCKET_NAME is not set")
    for storage in storages:
        locations[storage.kind] = _apply(storage, policy, now, dry_run)
    return CleanupJobResult(dry_run=dry_run, policy=policy.to_dict(), locations=locations).model_dump(mode="json")


def _apply(storage: Storage, policy: RetentionPolicy, now: datetime, dry_run: bool) -> CleanupLocation:
    backups = storage.list()
    verified = newest_verified(storage, backups)
    decision = apply_policy(backups, policy, now, verified)
    deleted, errors = [], {}
    if not dry_run:
        for b in decision.delete:
            try:
                storage.delete(b.name)  # removes the sidecars / recorded checksum with it
                deleted.append(b.name)
            except BackupError as exc:  # one stuck file must not stop the rest; reported by the caller
                errors[b.name] = exc.message
    return CleanupLocation(where=storage.location(), **decision.to_dict(),
                           verified=VerifiedNewest(**verified.to_dict()), deleted=deleted, errors=errors)
