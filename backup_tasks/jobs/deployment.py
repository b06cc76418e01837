"""The `databases` job: every database of the deployment with its schedule, retention, where its backups go,
and its newest backup there (one listing per location: a directory scan, one ListObjectsV2 per 1,000 keys)."""

from __future__ import annotations

from typing import Any

from .. import databases, dsn
from ..errors import BackupError
from ..progress import ProgressFn, no_progress
from ..retention import RetentionPolicy
from ..storage.base import Storage
from ..storage.factory import local_storage, s3_storage
from . import Database, job
from .results import DatabasesJobResult, DatabaseSummary, NewestBackup


@job("databases", per_database=False)
def list_databases(*, progress: ProgressFn = no_progress) -> dict[str, Any]:
    found, problems = databases.all_databases()
    dep = databases.deployment()
    return DatabasesJobResult(file=str(dep.file) if dep.file else None, databases=[summary(db) for db in found],
                              problems=problems).model_dump(mode="json")


def summary(db: Database) -> DatabaseSummary:
    c = db.config
    newest = [_newest(local_storage(c))]
    if c.s3_enabled:
        newest.append(_newest(s3_storage(c)))
    return DatabaseSummary(
        name=db.name, origin=db.origin, target=None if db.url_error else dsn.describe(db.url),
        problem=db.url_error, cron=c.BACKUP_CRON, timezone=c.BACKUP_TIMEZONE,
        retention=RetentionPolicy.from_settings(c).to_dict(), overrides=list(db.overrides),
        newest=newest)


def _newest(storage: Storage) -> NewestBackup:
    try:
        backups = storage.list()
    except BackupError as exc:
        return NewestBackup(location=storage.kind, where=storage.location(), error=exc.message)
    first = next((b for b in backups if b.size), None)  # Storage.list is newest first
    return NewestBackup(location=storage.kind, where=storage.location(), count=len(backups),
                        name=first.name if first else None, created_at=first.created_at if first else None)
