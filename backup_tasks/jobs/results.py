"""What each job returns: the engine's models (models.py) plus what the job adds to them.

A job returns `SomeJobResult(...).model_dump(mode="json")` (JSON for the result backend); the CLI validates the
dict back into the same model before rendering it, so what is printed does not depend on where the job ran, and
a field renamed on one side fails loudly instead of printing "None". A task adds `job` (its name) to the dict.
Nothing here holds a secret: databases by name, host and port only, backups by name or path.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from .. import dsn
from ..models import BackupResult, DiffSummary, DrillReport, RestoreResult, VerifyResult
from ..record import Record, empty_dict, empty_list


class WorkerTarget(Record):
    """The database a worker's jobs act on when given no --database-url; its answer to the client's ping."""

    name: str
    host: str
    port: int
    key: str
    description: str

    @classmethod
    def of(cls, url: str) -> WorkerTarget:
        target = dsn.parse(url)
        return cls(name=target.name, host=target.host, port=target.port, key=target.key,
                   description=target.describe())


class DrillStatus(Record):
    """A backup's last drill, as a listing shows it: from its `<backup>.drill.json`."""

    outcome: str  # ok | failed | error | unreadable
    finished_at: datetime | None = None
    detail: str | None = None  # the failure, one line

    @classmethod
    def of(cls, data: bytes | None) -> DrillStatus | None:
        if data is None:
            return None
        try:
            report = DrillReport.model_validate_json(data)
        except ValueError as exc:
            return cls(outcome="unreadable", detail=str(exc).splitlines()[0])
        return cls(outcome=report.outcome, finished_at=report.finished_at, detail=report.error)


class StoredBackup(Record):
    name: str
    size: int
    created_at: datetime
    sha256: str | None = None  # on S3 only when listed with details
    migration_version: str | None = None
    location: str = "local"
    sidecars: list[str] = Field(default_factory=empty_list)  # kinds of names.SIDECARS stored next to it
    unreadable: str | None = None  # why its head could not be read, when the listing tried
    drill: DrillStatus | None = None  # its last restore drill (None: never drilled)


class ListingJobResult(Record):
    location: str
    where: str
    details: bool = True  # False: list-s3 without --long (no checksums or migration versions: one request)
    backups: list[StoredBackup]


class UploadJobResult(StoredBackup):
    source: str
    url: str


class DownloadJobResult(Record):
    name: str
    path: str
    size: int
    url: str
    checksum: str  # "ok" (verified against the recorded SHA-256) | "missing"


class S3Source(Record):
    location: str = "s3"
    url: str
    sha256: str | None = None


class CreateJobResult(BackupResult):
    upload: UploadJobResult | None = None


class DiffJobResult(DiffSummary):
    target_database: str
    target_host: str
    file: str


class RestoreJobResult(RestoreResult):
    target_database: str
    target_host: str
    file: str
    source: S3Source | None = None


class VerifyJobResult(VerifyResult):
    file: str | None = None
    source: S3Source | None = None


class VerifiedNewest(Record):
    """retention.Verified: the newest backup whose checksum verifies (None: none does), and why newer ones did not."""

    newest: str | None = None
    failed: dict[str, str] = Field(default_factory=empty_dict)


class CleanupLocation(Record):
    where: str | None = None
    skipped: str | None = None  # why this location was not looked at (S3 not configured)
    verified: VerifiedNewest | None = None
    keep: list[str] = Field(default_factory=empty_list)
    delete: list[str] = Field(default_factory=empty_list)
    reasons: dict[str, list[str]] = Field(default_factory=empty_dict)
    ignored: list[str] = Field(default_factory=empty_list)
    deleted: list[str] = Field(default_factory=empty_list)
    errors: dict[str, str] = Field(default_factory=empty_dict)


class CleanupJobResult(Record):
    dry_run: bool
    policy: dict[str, int]
    locations: dict[str, CleanupLocation]


class ScheduledBackupResult(Record):
    slot: str
    database: str | None = None  # the PostgreSQL database's own name
    db: str | None = None  # its name in this deployment (--db); a server's name for a fan-out
    skipped: bool
    fanned_out: list[str] = Field(default_factory=empty_list)  # a server's databases, each sent its own backup
    reason: str | None = None
    create: dict[str, Any] | None = None  # a CreateJobResult, or {"name", "resumed"} after a redelivery
    upload: UploadJobResult | None = None
    cleanup: CleanupJobResult | None = None


class ScheduledDrillResult(Record):
    slot: str
    database: str | None = None  # the PostgreSQL database's own name
    db: str | None = None  # its name in this deployment
    skipped: bool
    reason: str | None = None
    drill: dict[str, Any] | None = None  # a DrillJobResult


class NewestBackup(Record):
    location: str
    where: str
    count: int = 0
    name: str | None = None
    created_at: datetime | None = None
    error: str | None = None  # why the location could not be listed


class DatabaseSummary(Record):
    """One database of the deployment, as `backupctl databases` shows it (by name, host and port: no URL)."""

    name: str
    origin: str
    target: str | None = None
    problem: str | None = None
    cron: str
    timezone: str
    retention: dict[str, int]
    overrides: list[str] = Field(default_factory=empty_list)
    newest: list[NewestBackup] = Field(default_factory=empty_list)


class DatabasesJobResult(Record):
    file: str | None = None  # BACKUP_DATABASES_FILE; None: the one database of DATABASE_URL
    databases: list[DatabaseSummary]
    problems: dict[str, str] = Field(default_factory=empty_dict)  # servers whose discovery failed, and why


class DrillJobResult(DrillReport):
    report: str  # where the report was stored: a path, or s3://bucket/prefix/<backup>.drill.json
