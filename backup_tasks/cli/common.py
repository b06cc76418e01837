"""Options and helpers shared by every command."""

from __future__ import annotations

import functools
from typing import Any, Callable

import click


def job_options(fn: Callable) -> Callable:
    """--local / --no-wait for commands that run a job."""

    @click.option("--local", is_flag=True, help="Run in this process instead of on a Celery worker.")
    @click.option("--no-wait", is_flag=True, help="Enqueue, print the task id and return at once.")
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
    """Run a job in-process (with a progress bar) or on a worker. Returns the job's result dict, or None with --no-wait."""
    from .dispatch import dispatch

    return dispatch(name, kwargs, local=local, no_wait=no_wait)
