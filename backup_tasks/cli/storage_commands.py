"""Storage commands: list, upload, download, list-s3, restore-s3, cleanup.

Each runs a job from jobs/storage.py (here or on a worker) and prints a report from the dict it returns;
failures are BackupErrors, printed by cli/errors.py.
"""

from __future__ import annotations

import click

from ..errors import StorageError
from ..jobs.results import CleanupJobResult, DownloadJobResult, ListingJobResult, RestoreJobResult, UploadJobResult
from ..names import validate_name
from . import cli
from .common import database_option, job_options, restore_options, run_job
from .db_commands import confirm_restore, require_terminal
from .render import (
    as_model,
    render_cleanup,
    render_download,
    render_dry_run,
    render_listing,
    render_restore,
    render_restore_preface,
    render_upload,
)


@cli.command("list")
@job_options
def list_cmd(local: bool, no_wait: bool) -> None:
    """List local backups (BACKUP_DIR), newest first, with the migration version read from each file's head
    (a file whose head cannot be read is shown as unreadable, with the reason)."""
    result = run_job("list_local", {}, local=local, no_wait=no_wait)
    if result is not None:
        render_listing(as_model(ListingJobResult, result))


@cli.command("list-s3")
@click.option("--long", "-l", "long_", is_flag=True,
              help="Also show each backup's recorded SHA-256 and migration version (one HEAD request per backup).")
@job_options
def list_s3_cmd(long_: bool, local: bool, no_wait: bool) -> None:
    """List backups in S3 (S3_BUCKET_NAME/S3_PREFIX), newest first: name, size, creation time.

    One ListObjectsV2 request per 1,000 backups; --long adds the metadata recorded at upload, at the cost of a
    request per backup (seconds for thousands of backups on a real S3)."""
    result = run_job("list_s3", {"long": True} if long_ else {}, local=local, no_wait=no_wait)
    if result is not None:
        render_listing(as_model(ListingJobResult, result))


@cli.command("upload")
@click.argument("file")
@job_options
def upload_cmd(file: str, local: bool, no_wait: bool) -> None:
    """Upload FILE (a backup name in BACKUP_DIR, or a path) to S3 with its SHA-256."""
    result = run_job("upload", {"file": file}, local=local, no_wait=no_wait)
    if result is not None:
        render_upload(as_model(UploadJobResult, result))


@cli.command("download")
@click.argument("name")
@job_options
def download_cmd(name: str, local: bool, no_wait: bool) -> None:
    """Download backup NAME from S3 into BACKUP_DIR, verifying its SHA-256."""
    validate_name(name)
    result = run_job("download", {"name": name}, local=local, no_wait=no_wait)
    if result is not None:
        render_download(as_model(DownloadJobResult, result))


def _downloaded_line(r: RestoreJobResult) -> None:
    if r.source is not None:
        sha = r.source.sha256
        click.echo(f"Downloaded {r.source.url} ({f'sha256 {sha} verified' if sha else 'no sha256 recorded'})")


@cli.command("restore-s3")
@click.argument("name")
@click.option("--dry-run", is_flag=True, help="Show what would change; do not touch the database.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@database_option
@click.option("--table", "tables", multiple=True, metavar="NAME", help="Restore only this table (repeatable).")
@restore_options
@job_options
def restore_s3_cmd(
    name: str, dry_run: bool, yes: bool, database_url: str | None, tables: tuple[str, ...], local: bool, no_wait: bool,
    restore_extras: dict,
) -> None:
    """Download backup NAME from S3 to a temp file, verify it, restore it, and remove the temp file.

    As `restore`: --yes runs one job; on a terminal a dry run (its own download) shows the detailed diff and the
    database it would restore into, as the job reports it, then the restore runs once confirmed."""
    validate_name(name)
    click.echo(f"Restoring from S3 backup: {name}")
    args = {"name": name, "database_url": database_url, "tables": list(tables) or None, **restore_extras}
    if dry_run:
        result = run_job("restore_s3", {**args, "dry_run": True}, local=local, no_wait=no_wait)
        if result is not None:
            preview = as_model(RestoreJobResult, result)
            _downloaded_line(preview)
            render_dry_run(preview)
        return
    require_terminal(yes)
    if not yes:
        click.echo("Calculating diff before restore...")
        preview = as_model(RestoreJobResult, run_job("restore_s3", {**args, "dry_run": True}, local=local))
        _downloaded_line(preview)
        if preview.diff is not None:
            render_restore_preface(preview.diff)
        confirm_restore(preview.target_database, preview.target_host,
                        preview.diff.backup_database_name if preview.diff else None)
    result = run_job("restore_s3", {**args, "show_diff": yes}, local=local, no_wait=no_wait)
    if result is not None:
        restored = as_model(RestoreJobResult, result)
        _downloaded_line(restored)
        render_restore(restored)


@cli.command("cleanup")
@click.option("--dry-run", is_flag=True, help="Print what would be deleted and why; delete nothing.")
@click.option("--target", type=click.Choice(["local", "s3", "all"]), default="all", show_default=True)
@job_options
def cleanup_cmd(dry_run: bool, target: str, local: bool, no_wait: bool) -> None:
    """Apply the retention policy (BACKUP_RETENTION_*, BACKUP_KEEP_*) to local backups and S3.

    The newest backup whose checksum verifies is always kept (checked newest-first, stopping at the first that
    does); when none verifies, nothing is deleted."""
    result = run_job("cleanup", {"dry_run": dry_run, "target": target}, local=local, no_wait=no_wait)
    if result is None:
        return
    failed = render_cleanup(as_model(CleanupJobResult, result))
    if failed:
        raise StorageError(f"{failed} backup{'s' if failed != 1 else ''} could not be deleted (listed above)")
