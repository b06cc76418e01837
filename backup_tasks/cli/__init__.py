"""`backupctl`: a thin Click client. Commands enqueue a job and wait (or run it in-process with --local)."""

from __future__ import annotations

import click

from .. import __version__
from .common import select_database
from .errors import run_main


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
# __version__ itself, not the installed metadata: an editable install's metadata keeps the version it was
# installed with, while the backup metadata's tool_version (core/backup.py) reads __version__.
@click.version_option(version=__version__, prog_name="backupctl")
@click.option("--db", "db", metavar="NAME", default=None, expose_value=False, callback=select_database,
              help="The database to act on, by its name in BACKUP_DATABASES_FILE (default BACKUP_DB, else the only "
                   "one); see `backupctl databases`.")
def cli() -> None:
    """PostgreSQL backup and restore to gzip JSON, without pg_dump."""


def register_commands() -> None:
    """Import the command modules, which add their commands to `cli` (main does; so do in-process tests)."""
    from . import db_commands, fleet_commands, job_commands, key_commands, storage_commands  # noqa: F401


def main() -> None:
    register_commands()
    run_main(cli)
