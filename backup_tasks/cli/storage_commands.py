"""Storage commands: list, upload, download, list-s3, restore-s3, cleanup.

Each runs a job from jobs/storage.py (here or on a worker) and prints a report from the dict it returns;
failures are BackupErrors, printed by cli/errors.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import click

from ..errors import StorageError
from ..names import validate_name
from ..settings import get_settings
from . import cli
from .common import database_option, job_options, run_job
from .db_commands import confirm_restore
from .render import render_diff, render_restore


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _print_backups(result: dict[str, Any]) -> None:
    backups, where = result["backups"], result["where"]
    if not backups:
        click.echo(f"No backups in {where}.")
        return
    # A listing without details (list-s3's default) has no migration versions or checksums: one request in all.
    details = result.get("details", True)
    # The hint goes in the heading, not below the rows, so that every line after the column titles is a backup.
    more = "" if details else "; checksums and migration versions: `list-s3 --long`, a request per backup"
    click.echo(f"{len(backups)} backup{'s' if len(backups) != 1 else ''} in {where} (newest first{more}):")
    width = max(len(b["name"]) for b in backups)
    extra = "  MIGRATION" if details else ""
    long_s3 = details and result.get("location") == "s3"
    click.echo(f"  {'NAME':<{width}}  {'SIZE':>10}  {'CREATED (UTC)':<19}" + ("  SHA256      " if long_s3 else "")
               + extra)
    for b in backups:
        created = datetime.fromisoformat(b["created_at"]).strftime("%Y-%m-%d %H:%M:%S")
        line = f"  {b['name']:<{width}}  {_size(b['size']):>10}  {created:<19}"
        if long_s3:
            line += f"  {(b['sha256'] or 'none')[:12]:<12}"
        if details:
            line += f"  {_version(b)}"
        click.echo(line)


def _version(b: dict[str, Any]) -> str:
    if b.get("unreadable"):
        return f"? (unreadable: {b['unreadable']})"
    return b["migration_version"] or "-"


@cli.command("list")
@job_options
def list_cmd(local: bool, no_wait: bool) -> None:
    """List local backups (BACKUP_DIR), newest first, with the migration version read from each file's head
    (a file whose head cannot be read is shown as unreadable, with the reason)."""
    result = run_job("list_local", {}, local=local, no_wait=no_wait)
    if result is not None:
        _print_backups(result)


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
        _print_backups(result)


@cli.command("upload")
@click.argument("file")
@job_options
def upload_cmd(file: str, local: bool, no_wait: bool) -> None:
    """Upload FILE (a backup name in BACKUP_DIR, or a path) to S3 with its SHA-256."""
    result = run_job("upload", {"file": file}, local=local, no_wait=no_wait)
    if result is not None:
        size, digest = _size(result["size"]), result["sha256"]
        click.echo(f"Uploaded {result['source']} to {result['url']} ({size}, sha256 {digest})")


@cli.command("download")
@click.argument("name")
@job_options
def download_cmd(name: str, local: bool, no_wait: bool) -> None:
    """Download backup NAME from S3 into BACKUP_DIR, verifying its SHA-256."""
    validate_name(name)
    result = run_job("download", {"name": name}, local=local, no_wait=no_wait)
    if result is not None:
        note = "checksum verified" if result["checksum"] == "ok" else "no checksum recorded: not verified"
        click.echo(f"Downloaded {result['url']} to {result['path']} ({_size(result['size'])}, {note})")


def _database_name(url: str) -> str:
    """The database a URL or libpq DSN points at, without credentials, for the confirmation question."""
    if "://" in url:
        parts = urlsplit(url)
        return parts.path.lstrip("/") or parts.hostname or "?"
    for word in url.split():
        if word.startswith("dbname="):
            return word.partition("=")[2]
    return "?"


@cli.command("restore-s3")
@click.argument("name")
@click.option("--dry-run", is_flag=True, help="Show what would change; do not touch the database.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@database_option
@click.option("--table", "tables", multiple=True, metavar="NAME", help="Restore only this table (repeatable).")
@job_options
def restore_s3_cmd(
    name: str, dry_run: bool, yes: bool, database_url: str | None, tables: tuple[str, ...], local: bool, no_wait: bool
) -> None:
    """Download backup NAME from S3 to a temp file, verify it, restore it, and remove the temp file."""
    validate_name(name)
    click.echo(f"Restoring from S3 backup: {name}")
    if not dry_run:
        # Asked before the download: the same question, and the same refusal without a terminal, as `restore`.
        confirm_restore(_database_name(database_url or get_settings().database_url), None, yes)
    kwargs = {"name": name, "dry_run": dry_run, "database_url": database_url, "tables": list(tables) or None}
    result = run_job("restore_s3", kwargs, local=local, no_wait=no_wait)
    if result is None:
        return
    sha = result["source"]["sha256"]
    click.echo(f"Downloaded {result['source']['url']} ({f'sha256 {sha} verified' if sha else 'no sha256 recorded'})")
    if dry_run:
        render_diff(result["diff"])
        click.echo("")
        click.echo(result["message"])
    else:
        render_restore(result)


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
    failed = 0
    for kind, loc in result["locations"].items():
        if "skipped" in loc:
            click.echo(f"{kind}: skipped ({loc['skipped']})")
            continue
        click.echo(f"{kind} ({loc['where']}): keep {len(loc['keep'])}, delete {len(loc['delete'])}")
        if "verified" in loc and loc["verified"]["newest"] is None and (loc["keep"] or loc["delete"]):
            click.echo("  no backup's checksum verifies: nothing is deleted here until one does")
        verb = "would delete" if dry_run else "deleted"
        for name in loc["delete"]:
            status = f"FAILED ({loc['errors'][name]})" if name in loc["errors"] else verb
            click.echo(f"  {status}: {name}: {'; '.join(loc['reasons'][name])}")
        for name in loc["keep"]:
            click.echo(f"  keep: {name}: {'; '.join(loc['reasons'][name])}")
        failed += len(loc["errors"])
    if dry_run:
        click.echo("Dry run: nothing was deleted.")
    if failed:
        raise StorageError(f"{failed} backup{'s' if failed != 1 else ''} could not be deleted (listed above)")
