"""run_drill: restore a backup into a scratch database and prove the result is the backup, exactly.

The proof, step by step (each a DrillCheck with its time): the file's SHA-256 equals the one recorded when it was
written (and its manifest's, when there is one), so the file is the backup's own bytes; the scratch schema has
every table and column of the backup; the restore commits; the row-level diff between the file and the scratch
database is empty for every table (tables without a primary key compared as multisets of whole rows); every
sequence has the recorded state; the migration version is the backup's. With a trusted file, an empty diff means
the database holds exactly what the file holds.

What the engine does not decide: which database is the scratch one and whether it may be used (jobs/drill.py
refuses production), how its schema is brought up (`prepare`, from the job), where the report goes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .. import __version__, dsn
from ..errors import BackupError, InvalidBackupError, RestoreError, SchemaMismatchError
from ..manifest import read_manifest
from ..memory import TreePeak, peak_rss_bytes, reset_peak_rss
from ..models import DRILL_ERROR, DRILL_FAILED, DRILL_OK, DiffSummary, DrillCheck, DrillReport, RestoreResult
from ..pg.restore_tx import restore_transaction
from ..pg.server import DatabaseFacts, database_facts
from ..progress import ProgressFn
from .diff import calculate_diff
from .options import EngineOptions
from .plan import schema_mismatches
from .restore import restore_backup
from .source import BackupSource, open_source

# Findings about the backup or the scratch schema: the drill failed. Any other error (the scratch server
# unreachable, a lock taken) means the drill could not reach a verdict.
# RestoreError: a statement of the restore failed (a value the column refuses, a duplicate key): rolled back.
FINDINGS = (InvalidBackupError, SchemaMismatchError, RestoreError)
MAX_FAILURES = 50  # names kept per check in the report


@dataclass(frozen=True)
class Prepared:
    """What DRILL_PREPARE_COMMAND did."""

    ok: bool
    detail: str
    output: str


class StepFailed(Exception):
    """A check found what it looked for wrong (its DrillCheck says what); the drill stops there."""


@dataclass
class DrillRun:
    report: DrillReport
    error: BackupError | None = None  # why the drill could not reach a verdict (outcome "error")


@dataclass
class _Drill:
    path: Path
    url: str
    options: EngineOptions
    progress: ProgressFn | None
    checks: list[DrillCheck] = field(default_factory=list)
    source: BackupSource | None = None
    restored: RestoreResult | None = None
    diff: DiffSummary | None = None
    facts: DatabaseFacts | None = None
    prepare_output: str | None = None
    mismatches: list[str] = field(default_factory=list)
    failing_tables: list[str] = field(default_factory=list)

    @contextmanager
    def step(self, name: str) -> Iterator[DrillCheck]:
        check = DrillCheck(name=name)
        self.checks.append(check)
        started = time.monotonic()
        try:
            yield check
            if check.ok is None:
                check.ok = True
        except FINDINGS as exc:
            check.ok, check.detail = False, exc.message
            raise StepFailed(name) from None
        except BackupError as exc:
            check.ok, check.detail = False, exc.message
            raise
        finally:
            check.seconds = round(time.monotonic() - started, 3)
        if check.ok is False:
            raise StepFailed(name)

    def checksum(self) -> None:
        with self.step("checksum") as check:
            self.source = source = open_source(self.path, self.options.max_line_bytes, keys=self.options.keys)
            if source.verified is None:
                check.ok, check.detail = False, "no recorded SHA-256 to check the file against (no .sha256 sidecar)"
                return
            manifest = read_manifest(self.path)
            if manifest is not None and manifest.sha256 != source.verified:
                check.ok = False
                check.detail = "the manifest records another SHA-256: the file changed after it was written"
                return
            check.detail = f"sha256 {source.verified} matches the recorded one" + (
                " and the manifest's" if manifest is not None else "")

    def prepare(self, prepare: Callable[[], Prepared]) -> None:
        with self.step("prepare") as check:
            done = prepare()
            self.prepare_output = done.output
            check.ok, check.detail = done.ok, done.detail

    def schema(self) -> None:
        with self.step("schema") as check:
            contents = self.source.contents
            with restore_transaction(self.url, self.options.lock_timeout_s) as tx:
                problems = schema_mismatches(contents, tx.catalog)
                have = {(s.schema, s.name) for s in tx.catalog.sequences}
            problems += [f"sequence {s.schema_name}.{s.name} is in the backup but not in the database"
                         for s in contents.metadata.sequences if (s.schema_name, s.name) not in have]
            self.mismatches = problems
            check.failures = problems[:MAX_FAILURES]
            check.ok = not problems
            check.detail = (f"{len(contents.tables)} tables and their columns match" if not problems else
                            f"schema drift: {len(problems)} mismatch{'es' if len(problems) != 1 else ''}")

    def restore(self, before_commit: Callable[[], None] | None) -> None:
        with self.step("restore") as check:
            self.restored = r = restore_backup(self.path, show_diff=False, database_url=self.url,
                                               progress=self.progress, options=self.options, source=self.source,
                                               before_commit=before_commit)
            check.detail = f"committed: {r.restored_tables} tables, {r.restored_rows} rows"

    def rows(self) -> None:
        with self.step("rows") as check:
            self.diff = d = calculate_diff(self.path, database_url=self.url, detailed=True, progress=self.progress,
                                           options=self.options, source=self.source, keyless=True)
            self.failing_tables = [key for key, t in d.tables.items() if _difference(t)]
            failing = [f"{key}: {_difference(d.tables[key])}" for key in self.failing_tables]
            objects = d.large_objects
            if objects is not None and _difference(objects):
                self.failing_tables.append("large objects")
                failing.append(f"large objects: {_difference(objects)}")
            check.failures = failing[:MAX_FAILURES]
            check.ok = not failing
            differ = "tables differ" if len(failing) != 1 else "table differs"
            check.detail = (f"row-level diff empty for all {len(d.tables)} tables ({d.total_backup_rows} rows)"
                            if not failing else f"{len(failing)} {differ} from the file after the restore")

    def sequences(self) -> None:
        with self.step("sequences") as check:
            self.facts = facts = database_facts(self.url)
            recorded = self.source.contents.metadata.sequences
            wrong = [f"{s.schema_name}.{s.name}: {facts.sequences.get((s.schema_name, s.name))} in the database, "
                     f"{(s.last_value, s.is_called)} in the backup" for s in recorded
                     if facts.sequences.get((s.schema_name, s.name)) != (s.last_value, s.is_called)]
            check.failures, check.ok = wrong[:MAX_FAILURES], not wrong
            check.detail = (f"{len(recorded)} sequence{'s' if len(recorded) != 1 else ''} as recorded" if not wrong
                            else f"{len(wrong)} differ from the backup's")

    def migration(self) -> None:
        with self.step("migration_version") as check:
            expected, found = self.source.contents.metadata.migration_version, self.facts.migration_version
            check.ok = expected == found
            check.detail = (f"{found or '(none)'} as in the backup" if check.ok
                            else f"{found or '(none)'} in the database, {expected or '(none)'} in the backup")


def _difference(t) -> str:
    """What differs between the file and the database for one table; empty when nothing does."""
    if t.to_insert is None or t.to_delete is None:
        return f"not compared row by row ({t.backup_rows} rows in the file, {t.current_rows} in the database)"
    parts = [f"{n} {what}" for n, what in ((t.to_insert, "missing"), (t.to_delete, "extra"),
                                            (t.to_change or 0, "changed")) if n]
    if not parts and t.current_rows != t.backup_rows:
        parts.append(f"{t.current_rows} rows, {t.backup_rows} in the file")
    return ", ".join(parts)


def run_drill(path: Path, *, scratch_url: str, location: str, options: EngineOptions = EngineOptions(),
              prepare: Callable[[], Prepared] | None = None, progress: ProgressFn | None = None,
              before_commit: Callable[[], None] | None = None) -> DrillRun:
    """Drill `path` into the scratch database at `scratch_url` (which the caller checked may be overwritten).
    Never raises for what it finds: the report says; DrillRun.error is why no verdict was reached, if so."""
    reset_peak_rss()
    started_at, started = datetime.now(UTC), time.monotonic()
    drill = _Drill(Path(path), scratch_url, options, progress)
    error: BackupError | None = None
    outcome = DRILL_OK
    with TreePeak() as tree:
        try:
            drill.checksum()
            if prepare is not None:
                drill.prepare(prepare)
            for step in (drill.schema, lambda: drill.restore(before_commit), drill.rows, drill.sequences,
                         drill.migration):
                step()
        except StepFailed:
            outcome = DRILL_FAILED
        except BackupError as exc:
            outcome, error = DRILL_ERROR, exc
    report = _report(drill, location, outcome, error, started_at, time.monotonic() - started)
    report.tree_peak_rss_bytes = tree.peak or None
    return DrillRun(report, error)


def _report(drill: _Drill, location: str, outcome: str, error: BackupError | None, started_at: datetime,
            duration: float) -> DrillReport:
    meta = drill.source.contents.metadata if drill.source else None
    restored, failed = drill.restored, next((c for c in drill.checks if c.ok is False), None)
    restore_check = next((c for c in drill.checks if c.name == "restore" and c.ok), None)
    restore_s = restore_check.seconds if restore_check else None
    size = drill.path.stat().st_size if drill.path.is_file() else 0
    return DrillReport(
        backup=drill.path.name, location=location, ok=outcome == DRILL_OK, outcome=outcome,
        error=dsn.mask(error.message if error else f"{failed.name}: {failed.detail}") if failed or error else None,
        started_at=started_at, finished_at=datetime.now(UTC), duration_s=round(duration, 3),
        scratch=dsn.describe(drill.url),
        backup_source=f"database {meta.database_name} on {meta.database_host}" if meta else None,
        backup_created_at=meta.timestamp if meta else None, migration_version=meta.migration_version if meta else None,
        tool_version=__version__, server_version=drill.facts.server_version if drill.facts else None,
        backup_server_version=meta.server_version if meta else None, checks=drill.checks,
        failing_tables=drill.failing_tables[:MAX_FAILURES],
        schema_mismatches=drill.mismatches[:MAX_FAILURES],
        tables=restored.restored_tables if restored else 0, rows=restored.restored_rows if restored else 0,
        backup_bytes=size, restore_s=restore_s,
        rows_per_s=round(restored.restored_rows / restore_s, 1) if restored and restore_s else None,
        bytes_per_s=round(size / restore_s, 1) if restore_s else None,
        peak_rss_bytes=peak_rss_bytes(),
        prepare_output=drill.prepare_output,
    )
