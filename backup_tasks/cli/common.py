"""Options and helpers shared by every command."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click


def select_database(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """--db NAME, before or after the command's name (`backupctl --db orders list`, `backupctl list --db orders`);
    the last one given wins. Only the name travels: the worker resolves it from its own configuration."""
    if value:
        root = ctx.find_root()
        root.obj = {**(root.obj or {}), "db": value}


def selected_database() -> str | None:
    """--db, else BACKUP_DB (environment or .env), else None (the job's process picks the only database)."""
    ctx = click.get_current_context(silent=True)
    chosen = ((ctx.find_root().obj or {}).get("db") if ctx is not None else None)
    if chosen:
        return chosen
    from ..settings import get_settings

    return (get_settings().BACKUP_DB or "").strip() or None


def db_option(fn: Callable) -> Callable:
    return click.option("--db", "db", metavar="NAME", default=None, expose_value=False, callback=select_database,
                        help="The database to act on (see `backupctl databases`).")(fn)


def job_options(fn: Callable) -> Callable:
    """--local / --no-wait / --db for commands that run a job."""

    @click.option("--local", is_flag=True, help="Run in this process instead of on a Celery worker.")
    @click.option("--no-wait", is_flag=True, help="Enqueue, print the task id and return at once.")
    @db_option
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


def restore_options(fn: Callable) -> Callable:
    """What a restore does besides the tables' rows: materialized views and large objects."""

    @click.option("--no-refresh-views", "no_refresh_views", is_flag=True,
                  help="Leave the materialized views over the restored tables as they are (default: refresh them, "
                       "in the same transaction).")
    @click.option("--large-objects/--no-large-objects", "large_objects", default=None,
                  help="Replace the database's large objects with the backup's (default: with a full restore, not "
                       "with --table).")
    @functools.wraps(fn)
    def wrapper(*args: Any, no_refresh_views: bool, large_objects: bool | None, **kwargs: Any) -> Any:
        return fn(*args, restore_extras={"refresh_views": not no_refresh_views, "large_objects": large_objects},
                  **kwargs)

    return wrapper


def database_option(fn: Callable) -> Callable:
    return click.option(
        "--database-url",
        envvar=None,
        default=None,
        metavar="URL",
        help="Database to use instead of DATABASE_URL.",
    )(fn)


def run_job(name: str, kwargs: dict[str, Any], *, local: bool, no_wait: bool = False) -> dict[str, Any] | None:
    """Run a job in-process (with a progress bar) or on a worker. Returns the job's result dict, or None with
    --no-wait."""
    from .dispatch import dispatch

    database = selected_database()
    if database is not None:
        if kwargs.get("database_url"):
            from ..errors import UsageError

            raise UsageError("give either --db or --database-url, not both",
                             hint="--db names a database of BACKUP_DATABASES_FILE; --database-url is any other.")
        kwargs = {**kwargs, "database": database}
    return dispatch(name, kwargs, local=local, no_wait=no_wait)
