"""create, diff, restore, verify: the seed's database commands; drill: a restore into a scratch database, proved."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import AbortedError, UsageError
from ..jobs.results import CreateJobResult, DiffJobResult, DrillJobResult, RestoreJobResult, VerifyJobResult
from . import cli
from .common import database_option, job_options, restore_options, run_job
from .render import (
    as_model,
    render_create,
    render_diff,
    render_drill,
    render_dry_run,
    render_restore,
    render_restore_preface,
    render_verify,
)


@cli.command()
@click.option("--output-dir", type=click.Path(file_okay=False), default=None,
              help="Directory for the backup (default BACKUP_DIR).")
@click.option("--upload", is_flag=True, help="Upload the backup to S3 when it is written.")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=None, metavar="N",
              help="Write the backup in N parts at once, in one snapshot (default BACKUP_JOBS): on the workers, "
                   "or with --local in N local processes.")
@click.option("--to", "to", type=click.Choice(["local", "s3"]), default="local", show_default=True,
              help="Where the backup is written: BACKUP_DIR, or straight into the bucket (no local copy at all).")
@database_option
@job_options
def create(output_dir, upload, jobs, to, database_url, local, no_wait):
    """Back up the database to a gzip JSON file."""
    if to == "s3" and (upload or output_dir):
        raise UsageError("--to s3 writes into the bucket directly: --upload and --output-dir do not apply",
                         hint="Use --to local --upload to keep a local copy and upload it.")
    click.echo("Creating database backup...")
    kwargs = {"output_dir": output_dir, "database_url": database_url, "upload": upload, "jobs": jobs, "to": to}
    result = run_job("create", kwargs, local=local, no_wait=no_wait)
    if result is not None:
        render_create(as_model(CreateJobResult, result))


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
        render_diff(as_model(DiffJobResult, result))


def require_terminal(yes: bool) -> None:
    """Without --yes a person must confirm: refuse at once, before any job runs, when there is no terminal."""
    if not yes and not sys.stdin.isatty():
        raise AbortedError("refusing to restore without confirmation (no terminal)",
                           hint="Pass --yes to restore non-interactively.")


def confirm_restore(target: str, host: str | None, backup_db: str | None) -> None:
    """Ask on the terminal (require_terminal came first). Restoring over another database name warns first.

    `target`/`host` are those the job will restore into, as the job itself reported them (a worker's own
    DATABASE_URL for a queued job), never this process's guess."""
    if backup_db and target and backup_db != target:
        click.secho(f"Warning: this backup was taken from database {backup_db!r}, not {target!r}.", fg="yellow")
    where = f"{target} on {host}" if host else target
    if not click.confirm(f"Restore into database {where}? This replaces its data.", default=False):
        raise AbortedError("restore cancelled; nothing was changed")


@cli.command()
@click.argument("file")
@click.option("--dry-run", is_flag=True, help="Show the diff and change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--table", "tables", multiple=True, help="Restore only this table (repeatable).")
@restore_options
@database_option
@job_options
def restore(file, dry_run, yes, tables, database_url, local, no_wait, restore_extras):
    """Replace the database's data with FILE's, in one transaction (FILE: path or backup name).

    With --yes one restore job runs and reports the seed's row-count diff it computed first; on a terminal the
    detailed diff is computed and shown (a person will read it), then the restore runs once confirmed."""
    args = {"file": file, "database_url": database_url, "tables": list(tables) or None, **restore_extras}
    click.echo(f"Restoring from backup: {Path(file).name}")
    if dry_run:
        result = run_job("restore", {**args, "dry_run": True}, local=local, no_wait=no_wait)
        if result is not None:
            render_dry_run(as_model(RestoreJobResult, result))
        return
    require_terminal(yes)
    click.echo("")
    click.echo("Calculating diff before restore...")
    if not yes:
        preview = as_model(DiffJobResult, run_job("diff", _diff_args(args), local=local))
        render_restore_preface(preview)
        confirm_restore(preview.target_database, preview.target_host, preview.backup_database_name)
    result = run_job("restore", {**args, "show_diff": yes}, local=local, no_wait=no_wait)
    if result is not None:
        render_restore(as_model(RestoreJobResult, result))


def _diff_args(restore_args: dict) -> dict:
    return {k: v for k, v in restore_args.items() if k in ("file", "database_url", "tables")}


@cli.command()
@click.argument("file")
@job_options
def verify(file, local, no_wait):
    """Check FILE completely (checksum, gzip, JSON, row counts) without touching a database."""
    result = run_job("verify", {"file": file}, local=local, no_wait=no_wait)
    if result is not None:
        render_verify(as_model(VerifyJobResult, result))


@cli.command()
@click.argument("file", required=False)
@click.option("--from", "source", type=click.Choice(["local", "s3"]), default=None,
              help="Where the backup is (default: S3 when it is configured and FILE is not here, else local).")
@click.option("--scratch-url", default=None, metavar="URL",
              help="The scratch database to restore into (default DRILL_DATABASE_URL); never the production one.")
@job_options
def drill(file, source, scratch_url, local, no_wait):
    """Restore FILE (default: the newest backup) into the scratch database and prove it restored exactly.

    Checks: the file's SHA-256, the scratch schema, the restore's commit, an empty row-level diff for every
    table, every sequence, the migration version. The report goes next to the backup (<backup>.drill.json).
    Exit 14 when the drill finds the backup does not restore exactly; 2 when the scratch database is production."""
    result = run_job("drill", {"file": file, "source": source, "scratch_url": scratch_url}, local=local,
                     no_wait=no_wait)
    if result is not None:
        render_drill(as_model(DrillJobResult, result))
