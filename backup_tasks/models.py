"""The seed's data models (pydantic), plus the additive fields this tool records.

The engine streams and never builds BackupData for a real database; BackupData exists so that small
documents (tests, tools) can be validated as a whole: `BackupData.model_validate(json.load(gzip.open(p)))`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field

from .record import Record, empty_dict, empty_list

FORMAT_NAME = "backup_tasks"
# 1: tables. 2: tables and the `large_objects` section, written only when the database has large objects (so an
# older backup_tasks refuses such a file, with a hint to upgrade, instead of restoring it without them).
FORMAT_VERSION = 2
LARGE_OBJECTS_FORMAT_VERSION = 2


class SequenceState(Record):
    schema_name: str = Field(alias="schema")
    name: str
    last_value: int
    is_called: bool

    model_config = ConfigDict(populate_by_name=True)


class TableSchema(Record):
    """One entry of the metadata's table of contents: what a table object in `tables` will hold."""

    key: str
    schema_name: str = Field(alias="schema")
    name: str
    columns: list[str]
    column_types: list[str]
    # An extension's configuration table holds the extension's own rows and the user's: only the rows this
    # condition selects were backed up, and only those are replaced on restore.
    filter: str | None = None

    model_config = ConfigDict(populate_by_name=True)


class LargeObjectsInfo(Record):
    count: int  # large objects in the backup (the `large_objects` section holds their chunks)


class NotIncludedItem(Record):
    """Something in the database that holds data and is not in the backup, and why."""

    kind: str  # "foreign table" | "materialized view" | "extension table"
    name: str
    reason: str


class BackupMetadata(Record):
    timestamp: datetime
    migration_version: str | None
    database_name: str
    database_host: str
    # Additive (documented in the README under "File format").
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    server_version: str | None = None
    tool_version: str | None = None
    contents: list[TableSchema] = Field(default_factory=empty_list)
    sequences: list[SequenceState] = Field(default_factory=empty_list)
    large_objects: LargeObjectsInfo | None = None  # absent when the database had none (and in older files)
    not_included: list[NotIncludedItem] = Field(default_factory=empty_list)

    model_config = ConfigDict(extra="allow")


class TableBackup(Record):
    row_count: int
    columns: list[str]
    data: list[list[Any]]
    schema_name: str | None = Field(default=None, alias="schema")
    name: str | None = None
    column_types: list[str] | None = None

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class BackupData(Record):
    metadata: BackupMetadata
    tables: dict[str, TableBackup]


class TableReport(Record):
    """What create_backup wrote for one table (for the seed's `- users: 100 rows (12.34 KB)` lines)."""

    name: str
    rows: int
    bytes: int


class BackupResult(Record):
    path: str
    name: str
    timestamp: datetime
    migration_version: str | None
    database_name: str
    tables: list[TableReport]
    total_rows: int
    uncompressed_bytes: int
    compressed_bytes: int
    sha256: str
    duration_s: float
    large_objects: int = 0
    large_object_bytes: int = 0
    not_included: list[NotIncludedItem] = Field(default_factory=empty_list)
    parts: int = 1  # written by this many parts (a parallel backup), assembled in order
    part_writers: int | None = None  # processes that wrote the parts (queued parallel backups)
    recipients: list[str] = Field(default_factory=empty_list)  # age public keys it was encrypted to (empty: plain)


class TableDiff(Record):
    current_rows: int
    backup_rows: int
    diff: int  # backup - current, as the seed defines it
    # Beyond the seed: what a restore would do, row by row, for tables with a primary key (None otherwise).
    has_primary_key: bool = False
    to_insert: int | None = None
    to_delete: int | None = None
    to_change: int | None = None
    in_backup: bool = True
    in_database: bool = True


class DiffSummary(Record):
    tables: dict[str, TableDiff]
    total_current_rows: int
    total_backup_rows: int
    total_diff: int
    backup_name: str | None = None
    backup_timestamp: datetime | None = None
    backup_migration_version: str | None = None
    current_migration_version: str | None = None
    backup_database_name: str | None = None
    large_objects: TableDiff | None = None  # counts (and, detailed, oids to add or remove) of large objects


class RestoredTable(Record):
    name: str
    rows: int


class RestoreResult(Record):
    success: bool
    restored_tables: int
    restored_rows: int
    message: str
    backup_name: str | None = None
    backup_timestamp: datetime | None = None
    dry_run: bool = False
    migration_version_before: str | None = None
    migration_version_after: str | None = None
    truncated: list[str] = Field(default_factory=empty_list)
    tables: list[RestoredTable] = Field(default_factory=empty_list)
    sequences_restored: int = 0
    triggers_mode: str | None = None
    diff: DiffSummary | None = None
    duration_s: float = 0.0
    views_refreshed: list[str] = Field(default_factory=empty_list)  # materialized views over the restored tables
    views_not_refreshed: list[str] = Field(default_factory=empty_list)  # such views this role may not refresh
    large_objects: dict[str, Any] | None = None  # restored, bytes, removed, owners_missing; or skipped: why
    phase_s: dict[str, float] = Field(default_factory=empty_dict)  # seconds per step after the rows


class VerifyResult(Record):
    ok: bool
    name: str
    timestamp: datetime | None = None
    migration_version: str | None = None
    format_version: int | None = None
    tables: int = 0
    rows: int = 0
    uncompressed_bytes: int = 0
    sha256: str | None = None
    checksum: str = "unknown"  # "ok" | "missing" (no sidecar recorded) | "mismatch"
    problems: list[str] = Field(default_factory=empty_list)
    encrypted: bool = False  # an age file (decrypted and authenticated to its end by the verification)


# --- restore drills (README "Restore drills"): the report stored next to a backup as <backup>.drill.json ---------

DRILL_REPORT_FORMAT = "backup_tasks-drill"
DRILL_OK, DRILL_FAILED, DRILL_ERROR = "ok", "failed", "error"  # error: the drill could not run to a verdict


class DrillCheck(Record):
    """One step of a drill: `ok` None when it did not run (an earlier step failed)."""

    name: str  # prepare | schema | checksum | restore | rows | sequences | migration_version
    ok: bool | None = None
    seconds: float | None = None
    detail: str | None = None  # what was found, one line
    failures: list[str] = Field(default_factory=empty_list)  # failing tables, columns or sequences, by name


class DrillReport(Record):
    format: str = DRILL_REPORT_FORMAT
    report_version: int = 1
    backup: str  # the backup's name
    location: str  # where the drilled backup lives: local | s3
    ok: bool
    outcome: str  # ok | failed | error
    error: str | None = None  # the failure, one line (masked)
    started_at: datetime
    finished_at: datetime
    duration_s: float
    scratch: str  # `database NAME on HOST:PORT`, never the URL
    backup_source: str | None = None  # the database the backup was taken from (its metadata)
    backup_created_at: datetime | None = None
    migration_version: str | None = None
    tool_version: str | None = None
    server_version: str | None = None  # the scratch server's
    backup_server_version: str | None = None
    checks: list[DrillCheck] = Field(default_factory=empty_list)
    failing_tables: list[str] = Field(default_factory=empty_list)
    schema_mismatches: list[str] = Field(default_factory=empty_list)
    tables: int = 0
    rows: int = 0
    backup_bytes: int = 0  # the backup file's size (compressed)
    restore_s: float | None = None
    rows_per_s: float | None = None
    bytes_per_s: float | None = None  # compressed file bytes restored per second
    peak_rss_bytes: int | None = None  # the drill's own process, from its start
    tree_peak_rss_bytes: int | None = None  # the process and its children (the diff's row reader), sampled
    prepare_output: str | None = None  # DRILL_PREPARE_COMMAND's output (its tail), masked

    model_config = ConfigDict(extra="allow")

    def check(self, name: str) -> DrillCheck | None:
        return next((c for c in self.checks if c.name == name), None)
