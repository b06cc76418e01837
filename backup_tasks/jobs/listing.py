"""What a listing needs beyond a storage's names and sizes: migration versions read from the backups' heads
(bounded reads, through `archive`, since storages do not know the format), and the newest backup whose checksum
verifies, for retention."""

from __future__ import annotations

from dataclasses import replace

from ..archive.header import read_migration_version
from ..errors import InvalidBackupError, NotFoundError, StorageError
from ..manifest import parse_manifest
from ..names import is_encrypted_name
from ..retention import Verified
from ..storage.base import BackupInfo, Storage


def with_migration_versions(storage: Storage, backups: list[BackupInfo]) -> list[BackupInfo]:
    """Each backup with the migration version at the head of its file, or `unreadable` saying why there is none.

    Reads at most archive.header's bound of each file, so it is meant for a storage whose open() is cheap (the
    local directory); on S3 the version recorded at upload comes with list(details=True) instead."""
    out = []
    for b in backups:
        if b.unreadable:
            out.append(b)
            continue
        if is_encrypted_name(b.name):
            out.append(_from_manifest(storage, b))
            continue
        try:
            with storage.open(b.name) as stream:
                version = read_migration_version(stream)
        except NotFoundError:
            continue  # deleted since the listing
        except (InvalidBackupError, StorageError) as exc:
            out.append(replace(b, unreadable=exc.message))
        except OSError as exc:  # a read error in the middle of the file's head
            out.append(replace(b, unreadable=f"cannot be read: {exc.strerror or exc}"))
        else:
            out.append(replace(b, migration_version=version))
    return out


def _from_manifest(storage: Storage, b: BackupInfo) -> BackupInfo:
    """An encrypted backup's migration version from its manifest: listing never decrypts (nor needs the secret
    key); without a manifest the version is simply unknown."""
    try:
        data = storage.get_sidecar(b.name, "manifest")
    except (NotFoundError, StorageError):
        data = None
    manifest = parse_manifest(data, b.name) if data is not None else None
    return replace(b, migration_version=manifest.migration_version) if manifest is not None else b


def newest_verified(storage: Storage, backups: list[BackupInfo]) -> Verified:
    """Check checksums newest-first (`backups` as Storage.list orders them) and stop at the first that verifies:
    usually one check, all of them only when none verifies (hashing every file of a large directory on each
    cleanup would be the cost otherwise)."""
    failed: dict[str, str] = {}
    for b in backups:
        try:
            verdict = storage.verify(b.name)
        except NotFoundError:
            failed[b.name] = "deleted since the listing"
            continue
        if verdict.ok:
            return Verified(b.name, failed)
        failed[b.name] = verdict.detail
    return Verified(None, failed)
