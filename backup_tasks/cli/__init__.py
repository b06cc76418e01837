"""`backupctl`: a thin Click client. Commands enqueue a job and wait (or run it in-process with --local)."""

from __future__ import annotations

import click

from .errors import run_main


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="backup_tasks")
def cli() -> None:
    """PostgreSQL backup and restore to gzip JSON, without pg_dump."""


def _register() -> None:
    from . import db_commands, job_commands, storage_commands  # noqa: F401  (they add their commands to `cli`)


def main() -> None:
    _register()
    run_main(cli)
