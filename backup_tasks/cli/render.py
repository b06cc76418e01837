"""Job results rendered as the seed's reports, from the models the jobs return (jobs/results.py).

The dict a job returned (here or on a worker) is validated back into its model at the edge (`as_model`), so
what is printed does not depend on where the job ran. One function per report; `render_result` picks one by
the job name a task stores in its result (`backupctl wait`).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, TypeVar

import click
from pydantic import BaseModel, ValidationError

from ..errors import BackupError
from ..jobs.results import (
    CleanupJobResult,
    CreateJobResult,
    DatabasesJobResult,
    DatabaseSummary,
    DiffJobResult,
    DownloadJobResult,
    DrillJobResult,
    DrillStatus,
    ListingJobResult,
    RestoreJobResult,
    ScheduledBackupResult,
    ScheduledDrillResult,
    StoredBackup,
    UploadJobResult,
    VerifyJobResult,
)
from ..models import DiffSummary, TableDiff
from ..units import format_bytes

M = TypeVar("M", bound=BaseModel)


def as_model(model: type[M], result: dict[str, Any] | M) -> M:
    """A job's result dict as its model; a result of another shape is a BackupError, not a traceback."""
    if isinstance(result, model):
        return result
    try:
        return model.model_validate(result)
    except ValidationError as exc:
        raise BackupError(f"the job's result could not be read as {model.__name__} ({exc.error_count()} problems, "
                          f"first: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']})",
                          hint="Is the worker running another version of backup_tasks? Update both.") from None


def timestamp(value: datetime | str | None) -> str:
    """ISO timestamps as the seed prints them: 2025-11-01T12:34:56.789Z."""
    if not value:
        return "unknown"
    text = (value.isoformat() if isinstance(value, datetime) else value).replace("+00:00", "Z")
    if "." in text:
        head, frac = text.split(".", 1)
        digits = "".join(ch for ch in frac if ch.isdigit())
        return f"{head}.{digits[:3].ljust(3, '0')}Z"
    return text if text.endswith("Z") else text + "Z"


def render_create(r: CreateJobResult) -> None:
    click.echo(f"Migration version: {r.migration_version or '(none)'}")
    for t in r.tables:
        click.echo(f"- {t.name}: {t.rows} rows ({format_bytes(t.bytes)})")
    click.echo(f"Total: {len(r.tables)} tables, {r.total_rows} rows")
    if r.large_objects:
        click.echo(f"Large objects: {r.large_objects} ({format_bytes(r.large_object_bytes)})")
    for item in r.not_included:
        click.echo(f"Not included: {item.kind} {item.name} ({item.reason})")
    click.echo(f"Backup size: {format_bytes(r.uncompressed_bytes)} → {format_bytes(r.compressed_bytes)} (compressed)")
    if r.recipients:
        count = len(r.recipients)
        click.echo(f"Encrypted with age to {count} recipient{'s' if count != 1 else ''}: {', '.join(r.recipients)}")
    if r.parts > 1:
        writers = f" by {r.part_writers} process{'es' if r.part_writers != 1 else ''}" if r.part_writers else ""
        click.echo(f"Written in {r.parts} parts{writers}, in one snapshot")
    click.echo(f"Saved to: {r.path}")
    if r.upload is not None:
        click.echo(f"Uploaded to: {r.upload.url}")


def _diff_line(name: str, t: TableDiff) -> str:
    line = f"  {name}: {t.current_rows} → {t.backup_rows} ({t.diff:+d})"
    if t.to_insert is not None:
        changes = [f"{label} {n}" for n, label in
                   ((t.to_insert, "insert"), (t.to_delete, "delete"), (t.to_change, "change")) if n]
        line += f"  [{', '.join(changes)}]" if changes else "  [no row changes]"
    if not t.in_backup:
        line += "  (not in backup: will be emptied)"
    return line


def render_diff_tables(d: DiffSummary) -> None:
    for name, t in d.tables.items():
        click.echo(_diff_line(name, t))
    if d.large_objects is not None:
        click.echo(_diff_line("(large objects)", d.large_objects))


def render_diff_total(d: DiffSummary) -> None:
    click.echo(f"Total: {d.total_current_rows} rows → {d.total_backup_rows} rows ({d.total_diff:+d})")


def render_diff(d: DiffSummary) -> None:
    click.echo(f"Backup created at: {timestamp(d.backup_timestamp)}")
    cur, bak = d.current_migration_version, d.backup_migration_version
    if cur != bak:
        click.echo(f"Migration version: {cur or '(none)'} (database) → {bak or '(none)'} (backup)")
    click.echo("")
    click.echo("Table Diff Summary:")
    render_diff_tables(d)
    click.echo("")
    render_diff_total(d)


def render_restore_preface(d: DiffSummary) -> None:
    """The seed's lines between "Calculating diff before restore..." and the restore itself."""
    click.echo(f"Backup created at: {timestamp(d.backup_timestamp)}")
    click.echo(f"Migration version: {d.backup_migration_version or '(none)'}")
    render_diff_tables(d)
    render_diff_total(d)


def render_dry_run(r: RestoreJobResult) -> None:
    if r.diff is not None:
        render_diff(r.diff)
    if r.views_refreshed:
        click.echo(f"Materialized views it would refresh: {', '.join(r.views_refreshed)}")
    if r.views_not_refreshed:
        click.echo(f"Materialized views it could not refresh (not owned): {', '.join(r.views_not_refreshed)}")
    click.echo("")
    click.echo(r.message)


def render_restore(r: RestoreJobResult) -> None:
    if r.diff is not None:  # computed by the restore itself (show_diff: nobody confirmed)
        render_restore_preface(r.diff)
    click.echo("Starting restore transaction...")
    for name in r.truncated:
        click.echo(f"Truncating table: {name}")
    click.echo(f"Adjusting migration version: {r.migration_version_before or '(none)'} → "
               f"{r.migration_version_after or '(none)'}")
    for t in r.tables:
        click.echo(f"Restoring table: {t.name} ({t.rows} rows)")
    _render_after_rows(r)
    if r.sequences_restored:
        click.echo(f"Restoring sequences: {r.sequences_restored}")
    click.echo("Committing transaction...")
    click.echo("")
    click.echo(r.message)


def _render_after_rows(r: RestoreJobResult) -> None:
    """What the restore did after the rows, with the time each step took."""
    objects = r.large_objects or {}
    if objects.get("restored") or objects.get("removed"):
        click.echo(f"Restoring large objects: {objects.get('restored', 0)} ({format_bytes(objects.get('bytes', 0))})"
                   + _seconds(r, "large_objects"))
        if objects.get("owners_missing"):
            click.echo(f"  owned by the restoring role instead (role missing or not ours to give): "
                       f"{', '.join(objects['owners_missing'])}")
    elif objects.get("skipped"):
        click.echo(f"Large objects: {objects['skipped']}")
    for label, key in (("Rebuilt indexes", "indexes"), ("Validated foreign keys", "foreign_keys")):
        if key in r.phase_s:
            click.echo(f"{label}{_seconds(r, key)}")
    if r.views_refreshed:
        click.echo(f"Refreshed materialized views: {', '.join(r.views_refreshed)}{_seconds(r, 'views')}")
    if r.views_not_refreshed:
        click.echo(f"Not refreshed (owned by another role): {', '.join(r.views_not_refreshed)}")


def _seconds(r: RestoreJobResult, phase: str) -> str:
    return f" ({r.phase_s[phase]:.2f} s)" if phase in r.phase_s else ""


def render_verify(v: VerifyJobResult) -> None:
    click.echo(f"{v.name}: OK")
    click.echo(f"  created at: {timestamp(v.timestamp)}")
    click.echo(f"  migration version: {v.migration_version or '(none)'}")
    click.echo(f"  format version: {v.format_version}")
    click.echo(f"  tables: {v.tables}, rows: {v.rows}, uncompressed: {format_bytes(v.uncompressed_bytes)}")
    checksum = {"ok": "matches the recorded SHA-256", "missing": "no SHA-256 recorded (sidecar missing)"}
    click.echo(f"  checksum: {checksum.get(v.checksum, v.checksum)}")
    if v.encrypted:
        click.echo("  encryption: age, every chunk authenticated")


def render_listing(listing: ListingJobResult) -> None:
    backups, where = listing.backups, listing.where
    if not backups:
        click.echo(f"No backups in {where}.")
        return
    # A listing without details (list-s3's default) has no migration versions or checksums: one request in all.
    # The hint goes in the heading, not below the rows, so that every line after the column titles is a backup.
    more = "" if listing.details else "; checksums and migration versions: `list-s3 --long`, a request per backup"
    click.echo(f"{len(backups)} backup{'s' if len(backups) != 1 else ''} in {where} (newest first{more}):")
    width = max(len(b.name) for b in backups)
    long_s3 = listing.details and listing.location == "s3"
    # The last drill before the migration version: a fixed width, and the version stays the last column.
    click.echo(f"  {'NAME':<{width}}  {'SIZE':>10}  {'CREATED (UTC)':<19}  {'LAST DRILL (UTC)':<{DRILL_WIDTH}}"
               + ("  SHA256      " if long_s3 else "") + ("  MIGRATION" if listing.details else ""))
    for b in backups:
        line = (f"  {b.name:<{width}}  {format_bytes(b.size, 1):>10}  {b.created_at:%Y-%m-%d %H:%M:%S}"
                f"  {drill_cell(b.drill):<{DRILL_WIDTH}}")
        if long_s3:
            line += f"  {(b.sha256 or 'none')[:12]:<12}"
        if listing.details:
            line += f"  {_version(b)}"
        click.echo(line)


DRILL_WIDTH = len("unreadable 2026-12-02 01:00")


def drill_cell(d: DrillStatus | None) -> str:
    """`ok 2026-12-02 01:00`, `failed 2026-12-02 01:00`, `never`: a backup's last restore drill."""
    if d is None:
        return "never"
    return f"{d.outcome} {d.finished_at:%Y-%m-%d %H:%M}" if d.finished_at else d.outcome


def render_drill(r: DrillJobResult) -> None:
    """A drill that passed (a failed one is an error: its message names the failing check and tables)."""
    click.echo(f"Drill of {r.backup} ({r.location}) into {r.scratch}: {r.outcome.upper()}")
    for c in r.checks:
        mark = "ok" if c.ok else "FAILED" if c.ok is False else "not run"
        took = f" ({c.seconds:.2f} s)" if c.seconds is not None else ""
        click.echo(f"  {c.name:<18} {mark:<7} {c.detail or ''}{took}")
    speed = (f", {r.rows_per_s:,.0f} rows/s, {format_bytes(int(r.bytes_per_s or 0))}/s" if r.rows_per_s else "")
    click.echo(f"Restored {r.tables} tables, {r.rows:,} rows in {r.restore_s or 0:.2f} s{speed}; drill "
               f"{r.duration_s:.2f} s in all")
    memory = [f"{what} {format_bytes(n)}" for what, n in (("process", r.peak_rss_bytes),
                                                           ("with its children", r.tree_peak_rss_bytes)) if n]
    if memory:
        click.echo(f"Peak memory: {', '.join(memory)}")
    click.echo(f"Server {r.server_version or '?'} (backup from {r.backup_server_version or '?'}), tool "
               f"{r.tool_version or '?'}")
    click.echo(f"Report: {r.report}")


def summary_of_drill(r: ScheduledDrillResult) -> str:
    if r.skipped:
        return f"scheduled drill for slot {r.slot} skipped: {r.reason}"
    drilled = r.drill or {}
    return f"scheduled drill for slot {r.slot}: {drilled.get('backup')} {drilled.get('outcome')}"


def _version(b: StoredBackup) -> str:
    if b.unreadable:
        return f"? (unreadable: {b.unreadable})"
    return b.migration_version or "-"


def render_databases(r: DatabasesJobResult) -> None:
    source = f"from {r.file}" if r.file else "DATABASE_URL alone (no BACKUP_DATABASES_FILE)"
    click.echo(f"{len(r.databases)} database{'s' if len(r.databases) != 1 else ''} ({source}):")
    for db in r.databases:
        _render_database(db)
    for server, problem in r.problems.items():
        click.secho(f"{server}: discovery failed: {problem}", fg="red")


def _render_database(db: DatabaseSummary) -> None:
    keep = db.retention
    gfs = "".join(f", {keep[k]} {k.removeprefix('keep_')}" for k in ("keep_daily", "keep_weekly", "keep_monthly")
                  if keep.get(k))
    click.echo(f"{db.name}: {db.target or db.problem} [{db.origin}]")
    click.echo(f"  schedule: {db.cron} ({db.timezone}); retention: {keep.get('days')} days, at least "
               f"{keep.get('min_count')}{gfs}" + (f"; overrides: {', '.join(db.overrides)}" if db.overrides else ""))
    for n in db.newest:
        if n.error:
            click.echo(f"  {n.location} {n.where}: cannot list: {n.error}")
        elif n.name is None:
            click.echo(f"  {n.location} {n.where}: no backups")
        else:
            click.echo(f"  {n.location} {n.where}: {n.count} backup{'s' if n.count != 1 else ''}, newest {n.name} "
                       f"({n.created_at:%Y-%m-%d %H:%M:%S} UTC)")


def render_upload(r: UploadJobResult) -> None:
    click.echo(f"Uploaded {r.source} to {r.url} ({format_bytes(r.size, 1)}, sha256 {r.sha256})")


def render_download(r: DownloadJobResult) -> None:
    note = "checksum verified" if r.checksum == "ok" else "no checksum recorded: not verified"
    click.echo(f"Downloaded {r.url} to {r.path} ({format_bytes(r.size, 1)}, {note})")


def render_cleanup(r: CleanupJobResult) -> int:
    """Print every decision and why; returns how many deletions failed."""
    failed = 0
    for kind, loc in r.locations.items():
        if loc.skipped:
            click.echo(f"{kind}: skipped ({loc.skipped})")
            continue
        click.echo(f"{kind} ({loc.where}): keep {len(loc.keep)}, delete {len(loc.delete)}")
        if loc.verified is not None and loc.verified.newest is None and (loc.keep or loc.delete):
            click.echo("  no backup's checksum verifies: nothing is deleted here until one does")
        verb = "would delete" if r.dry_run else "deleted"
        for name in loc.delete:
            status = f"FAILED ({loc.errors[name]})" if name in loc.errors else verb
            click.echo(f"  {status}: {name}: {'; '.join(loc.reasons.get(name, []))}")
        for name in loc.keep:
            click.echo(f"  keep: {name}: {'; '.join(loc.reasons.get(name, []))}")
        failed += len(loc.errors)
    if r.dry_run:
        click.echo("Dry run: nothing was deleted.")
    return failed


def summary_of_scheduled(r: ScheduledBackupResult) -> str:
    if r.fanned_out:
        return f"scheduled backups for slot {r.slot} sent for the databases of {r.db}: {', '.join(r.fanned_out)}"
    if r.skipped:
        return f"scheduled backup for slot {r.slot} skipped: {r.reason}"
    uploaded = " and uploaded" if r.upload else ""
    return f"scheduled backup for slot {r.slot}: {(r.create or {}).get('name')}{uploaded}"


_RENDERERS: dict[str, tuple[type[BaseModel], Any]] = {
    "create": (CreateJobResult, render_create),
    "diff": (DiffJobResult, render_diff),
    "verify": (VerifyJobResult, render_verify),
    "verify_s3": (VerifyJobResult, render_verify),
    "list_local": (ListingJobResult, render_listing),
    "list_s3": (ListingJobResult, render_listing),
    "upload": (UploadJobResult, render_upload),
    "download": (DownloadJobResult, render_download),
    "cleanup": (CleanupJobResult, render_cleanup),
    "scheduled_backup": (ScheduledBackupResult, lambda r: click.echo(summary_of_scheduled(r))),
    "databases": (DatabasesJobResult, render_databases),
    "drill": (DrillJobResult, render_drill),
    "scheduled_drill": (ScheduledDrillResult, lambda r: click.echo(summary_of_drill(r))),
}


def render_result(result: dict[str, Any]) -> None:
    """Print a finished job's result as the command that started it would have (by the job name it holds)."""
    job = result.get("job")
    if job in ("restore", "restore_s3"):
        restored = as_model(RestoreJobResult, result)
        (render_dry_run if restored.dry_run else render_restore)(restored)
    elif job in _RENDERERS:
        model, render = _RENDERERS[job]
        render(as_model(model, result))
    else:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
