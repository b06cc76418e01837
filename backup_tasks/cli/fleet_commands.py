"""databases: the databases of this deployment (BACKUP_DATABASES_FILE, or DATABASE_URL alone)."""

from __future__ import annotations

import click

from ..jobs.results import DatabasesJobResult
from . import cli
from .common import run_job
from .render import as_model, render_databases


@cli.command("databases")
@click.option("--local", is_flag=True, help="Read the configuration and list in this process, not on a worker.")
def databases_cmd(local: bool) -> None:
    """List the databases with their schedules, retention and newest backup (local and S3).

    Asked of a worker by default: its configuration and its BACKUP_DIR are the ones its jobs use."""
    result = run_job("databases", {}, local=local)
    render_databases(as_model(DatabasesJobResult, result))
