"""create, diff, restore, verify: the seed's database commands."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import AbortedError
from . import cli
from .common import database_option, job_options, run_job
from .render import render_create, render_diff, render_diff_tables, render_restore, render_verify, timestamp


@cli.command()
@click.option("--output-dir", type=click.Path(file_okay=False), default=None,
              help="Directory for the backup (default BACKUP_DIR).")
@click.option("--upload", is_flag=True, help="Upload the backup to S3 when it is written.")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=None, metavar="N",
              help="Write the backup in N parts at once, in one snapshot (default BACKUP_JOBS): on the workers, "
                   "or with --local in N local processes.")
@database_option
@job_options
def create(output_dir, upload, jobs, database_url, local, no_wait):
    """Back up the database to a gzip JSON file."""
    click.echo("Creating database backup...")
    kwargs = {"output_dir": output_dir, "database_url": database_url, "upload": upload, "jobs": jobs}
    result = run_job("create", kwargs, local=local, no_wait=no_wait)
    if result is not None:
        render_create(result)


@cli.command()
@click.argument("file")
@click.option("--table", "tables", multiple=True, help="Only this table (repeatable).")
@click.option("--counts-only", is_flag=True, help="Only row counts (skip the per-row comparison).")
@database_option
@job_options
def diff(file, tables, counts_only, database_url, local, no_wait):
    """Show what restoring FILE would change (FILE: path or backup name)."""
    click.echo(f"Calculating diff with backup: {Path(file).name}")
    result = run_job("diff", {"file": file, "database_url": database_url, "detailed": not counts_only,
                              "tables": list(tables) or None}, local=local, no_wait=no_wait)
    if result is not None:
        render_diff(result)


def confirm_restore(target: str, backup_db: str | None, yes: bool) -> None:
    """Ask on a terminal; without one, refuse unless --yes. Restoring over another database name warns first."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise AbortedError("refusing to restore without confirmation (no terminal)",
                           hint="Pass --yes to restore non-interactively.")
    if backup_db and target and backup_db != target:
        click.secho(f"Warning: this backup was taken from database {backup_db!r}, not {target!r}.", fg="yellow")
    if not click.confirm(f"Restore into database {target}? This replaces its data.", default=False):
        raise AbortedError("restore cancelled; nothing was changed")


@cli.command()
@click.argument("file")
@click.option("--dry-run", is_flag=True, help="Show the diff and change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--table", "tables", multiple=True, help="Restore only this table (repeatable).")
@database_option
@job_options
def restore(file, dry_run, yes, tables, database_url, local, no_wait):
    """Replace the database's data with FILE's, in one transaction (FILE: path or backup name)."""
    tables = list(tables) or None
    click.echo(f"Restoring from backup: {Path(file).name}")
    if dry_run:
        result = run_job("restore", {"file": file, "database_url": database_url, "dry_run": True, "tables": tables},
                         local=local, no_wait=no_wait)
        if result is not None:
            render_diff(result["diff"])
            click.echo("")
            click.echo(result["message"])
        return
    click.echo("")
    click.echo("Calculating diff before restore...")
    d = run_job("diff", {"file": file, "database_url": database_url, "tables": tables}, local=local)
    click.echo(f"Backup created at: {timestamp(d.get('backup_timestamp'))}")
    click.echo(f"Migration version: {d.get('backup_migration_version') or '(none)'}")
    render_diff_tables(d)
    click.echo(f"Total: {d['total_current_rows']} rows → {d['total_backup_rows']} rows ({d['total_diff']:+d})")
    confirm_restore(d.get("target_database"), d.get("backup_database_name"), yes)
    result = run_job("restore", {"file": file, "database_url": database_url, "tables": tables, "show_diff": False},
                     local=local, no_wait=no_wait)
    if result is not None:
        render_restore(result)


@cli.command()
@click.argument("file")
@job_options
def verify(file, local, no_wait):
    """Check FILE completely (checksum, gzip, JSON, row counts) without touching a database."""
    result = run_job("verify", {"file": file}, local=local, no_wait=no_wait)
    if result is not None:
        render_verify(result)
