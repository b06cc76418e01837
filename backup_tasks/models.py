"""The seed's data models (pydantic), plus the additive fields this tool records.

The engine streams and never builds BackupData for a real database; BackupData exists so that small
documents (tests, tools) can be validated as a whole: `BackupData.model_validate(json.load(gzip.open(p)))`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

FORMAT_NAME = "backup_tasks"
FORMAT_VERSION = 1


class SequenceState(BaseModel):
    schema_name: str = Field(alias="schema")
    name: str
    last_value: int
    is_called: bool

    model_config = ConfigDict(populate_by_name=True)


class TableSchema(BaseModel):
    """One entry of the metadata's table of contents: what a table object in `tables` will hold."""

    key: str
    schema_name: str = Field(alias="schema")
    name: str
    columns: list[str]
    column_types: list[str]

    model_config = ConfigDict(populate_by_name=True)


class BackupMetadata(BaseModel):
    timestamp: datetime
    migration_version: str | None
    database_name: str
    database_host: str
    # Additive (documented in the README under "File format").
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    server_version: str | None = None
    tool_version: str | None = None
    contents: list[TableSchema] = Field(default_factory=list)
    sequences: list[SequenceState] = Field(default_factory=list)

    model_config = ConfigDict(extra="allow")


class TableBackup(BaseModel):
    row_count: int
    columns: list[str]
    data: list[list[Any]]
    schema_name: str | None = Field(default=None, alias="schema")
    name: str | None = None
    column_types: list[str] | None = None

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class BackupData(BaseModel):
    metadata: BackupMetadata
    tables: dict[str, TableBackup]


class TableReport(BaseModel):
    """What create_backup wrote for one table (for the seed's `- users: 100 rows (12.34 KB)` lines)."""

    name: str
    rows: int
    bytes: int


class BackupResult(BaseModel):
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


class TableDiff(BaseModel):
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


class DiffSummary(BaseModel):
    tables: dict[str, TableDiff]
    total_current_rows: int
    total_backup_rows: int
    total_diff: int
    backup_name: str | None = None
    backup_timestamp: datetime | None = None
    backup_migration_version: str | None = None
    current_migration_version: str | None = None
    backup_database_name: str | None = None


class RestoredTable(BaseModel):
    name: str
    rows: int


class RestoreResult(BaseModel):
    success: bool
    restored_tables: int
    restored_rows: int
    message: str
    backup_name: str | None = None
    backup_timestamp: datetime | None = None
    dry_run: bool = False
    migration_version_before: str | None = None
    migration_version_after: str | None = None
    truncated: list[str] = Field(default_factory=list)
    tables: list[RestoredTable] = Field(default_factory=list)
    sequences_restored: int = 0
    triggers_mode: str | None = None
    diff: DiffSummary | None = None
    duration_s: float = 0.0


class VerifyResult(BaseModel):
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
    problems: list[str] = Field(default_factory=list)
