"""status, wait, check: follow jobs on the queue, and detect backups that silently stopped."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from .. import dsn
from ..errors import ConfigError, DrillStaleError, QueueError, StaleBackupError
from ..jobs.results import (
    CreateJobResult,
    DrillJobResult,
    ListingJobResult,
    ScheduledBackupResult,
    ScheduledDrillResult,
)
from ..units import format_bytes
from . import cli
from .common import db_option, run_job
from .render import as_model, render_result, summary_of_drill, summary_of_scheduled

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """'26h', '90m', '2d', '1d12h', '45s', '1w' -> timedelta. A bare number is refused (which unit?)."""
    compact = str(text).strip().lower().replace(" ", "")
    if not compact or _DURATION_RE.sub("", compact):
        raise ValueError(f"invalid duration {text!r}: use a number with a unit, e.g. 26h, 90m, 2d, 1d12h")
    seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_RE.findall(compact))
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: must be more than zero")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    text = "".join(parts)
    return text or f"{secs}s"


class _Duration(click.ParamType):
    name = "DURATION"

    def convert(self, value: Any, param: Any, ctx: Any) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def summary(result: Any) -> str:
    """One line for `backupctl status`: what a finished job did."""
    if not isinstance(result, dict):
        return str(result)
    job = result.get("job")
    if job == "create":
        created = as_model(CreateJobResult, result)
        return f"backup {created.name}: {created.total_rows} rows, {format_bytes(created.compressed_bytes)}"
    if job == "scheduled_backup":
        return summary_of_scheduled(as_model(ScheduledBackupResult, result))
    if job == "drill":
        drilled = as_model(DrillJobResult, result)
        return f"drill of {drilled.backup} ({drilled.location}): {drilled.outcome}, {drilled.rows} rows"
    if job == "scheduled_drill":
        return summary_of_drill(as_model(ScheduledDrillResult, result))
    if job in ("list_local", "list_s3"):
        listing = as_model(ListingJobResult, result)
        return f"{len(listing.backups)} backups in {listing.where}"
    for key in ("message", "name", "path", "url"):  # the other jobs' results all have one of these
        if result.get(key):
            return str(result[key])
    return "done"


def _progress_line(meta: dict[str, Any]) -> str:
    from .dispatch import progress_from_meta

    event = progress_from_meta(meta)
    if event is None:
        return "(no progress reported yet)"
    rows = f"{event.rows_done:,}" + (f"/{event.rows_total:,}" if event.rows_total else "")
    size = format_bytes(event.bytes_done)
    if event.bytes_total:
        size += f"/{format_bytes(event.bytes_total)}"
    table = f" {event.table}" if event.table else ""
    message = f" ({event.message})" if event.message else ""
    return f"{event.phase}{table}: {rows} rows, {size}{message}"


def _app():
    from ..celery_app import app

    return app


def _meta(app: Any, task_id: str) -> dict[str, Any]:
    try:
        return app.backend.get_task_meta(task_id)
    except Exception as exc:  # noqa: BLE001
        raise QueueError(f"cannot read job {task_id} from the result backend at {dsn.mask(app.conf.result_backend)} "
                         f"({type(exc).__name__}: {exc})", hint="Check that Redis is running.") from None


@cli.command()
@click.argument("task_id", metavar="ID")
def status(task_id: str) -> None:
    """Show a job's state, progress and result (ID: the task id printed by --no-wait)."""
    from .dispatch import failure_error

    meta = _meta(_app(), task_id)
    state, result = meta.get("status"), meta.get("result")
    click.echo(f"Job {task_id}: {state}")
    if state == "PENDING":
        click.echo("  waiting for a worker, or unknown (results are kept CELERY_RESULT_EXPIRES seconds)")
    elif state == "STARTED" and isinstance(result, dict):
        click.echo(f"  running on {result.get('hostname')} (pid {result.get('pid')})")
    elif state == "PROGRESS" and isinstance(result, dict):
        click.echo(f"  job: {result.get('job')} on {result.get('hostname')} (pid {result.get('pid')})")
        click.echo(f"  progress: {_progress_line(result)}")
    elif state == "SUCCESS":
        if isinstance(result, dict):
            click.echo(f"  job: {result.get('job')}")
        click.echo(f"  result: {summary(result)}")
    elif state in ("FAILURE", "RETRY"):
        error = failure_error(result, task_id)
        click.echo(f"  error: {error.message}")
        if error.hint:
            click.echo(f"  hint: {error.hint}")
        if state == "RETRY":
            click.echo("  (a transient error: the job will be retried)")


@cli.command("wait")
@click.argument("task_id", metavar="ID")
def wait_cmd(task_id: str) -> None:
    """Wait for a job with a progress bar, then print its report; exits with the job's exit code."""
    from .dispatch import wait

    render_result(wait(_app(), task_id))


def _listing(job: str, local: bool, *, optional: bool) -> ListingJobResult | None:
    try:
        return as_model(ListingJobResult, run_job(job, {}, local=local))
    except ConfigError:
        if optional and job == "list_s3":
            return None  # S3 not configured
        raise


def _newest(listings: list[ListingJobResult], when_of: Callable[[Any], datetime | None]
            ) -> tuple[datetime, str, str] | None:
    """(when, backup name, location) of the backup of all listings whose `when_of(backup)` is latest (None: not
    counted); a naive time is UTC."""
    newest: tuple[datetime, str, str] | None = None
    for listing in listings:
        for b in listing.backups:
            when = when_of(b)
            if when is None:
                continue
            when = when if when.tzinfo else when.replace(tzinfo=UTC)
            if newest is None or when > newest[0]:
                newest = (when, b.name, listing.location)
    return newest


def _created(backup: Any) -> datetime | None:
    return backup.created_at if backup.size else None  # an empty file is no backup


def _drilled(backup: Any) -> datetime | None:
    d = backup.drill
    return d.finished_at if d is not None and d.outcome == "ok" else None


def check_drills(listings: list[ListingJobResult], max_age: timedelta, where: str) -> str:
    hint = ("Run `backupctl drill`, or set BACKUP_DRILL_CRON for Beat; `backupctl list` shows each backup's "
            "last drill.")
    newest = _newest(listings, _drilled)
    if newest is None:
        raise DrillStaleError(f"no successful restore drill found in {where}", hint=hint)
    when, name, location = newest
    age = datetime.now(UTC) - when
    label = (f"newest successful drill ({name}, {location}) ended {when:%Y-%m-%d %H:%M:%S}Z, "
             f"{format_duration(age)} ago")
    if age > max_age:
        raise DrillStaleError(f"{label}: older than --max-drill-age {format_duration(max_age)}", hint=hint)
    return f"OK: {label} (max drill age {format_duration(max_age)})"


@cli.command()
@click.option("--max-age", type=_Duration(), default=None,
              help="Alert when the newest backup is older than this (e.g. 26h, 90m, 2d). Default 26h, unless "
                   "only --max-drill-age is given.")
@click.option("--max-drill-age", type=_Duration(), default=None,
              help="Alert (exit 13) when the newest successful restore drill is older than this (e.g. 8d).")
@click.option("--target", type=click.Choice(["local", "s3", "all"]), default="all", show_default=True,
              help="Where to look; `all` skips S3 when it is not configured.")
@click.option("--local", is_flag=True, help="List in this process instead of on a Celery worker.")
@db_option
def check(max_age: timedelta | None, max_drill_age: timedelta | None, target: str, local: bool) -> None:
    """Exit 11 when the newest backup is older than --max-age, 13 when the newest successful drill is older than
    --max-drill-age (for monitors: backups or drills that silently stopped)."""
    jobs = {"local": ["list_local"], "s3": ["list_s3"], "all": ["list_local", "list_s3"]}[target]
    listings = [x for x in (_listing(job, local, optional=target != "s3") for job in jobs) if x is not None]
    where = ", ".join(f"{x.location} ({x.where})" for x in listings) or target
    if max_age is None and max_drill_age is None:
        max_age = parse_duration("26h")
    lines = []
    if max_age is not None:
        lines.append(check_backups(listings, max_age, where))
    if max_drill_age is not None:
        lines.append(check_drills(listings, max_drill_age, where))
    for line in lines:
        click.echo(line)


def check_backups(listings: list[ListingJobResult], max_age: timedelta, where: str) -> str:
    hint = ("Check the worker and Beat (`make worker`, `make beat`) and their logs: the scheduled backup "
            "may have stopped, or be failing (see BACKUP_NOTIFY_WEBHOOK_URL).")
    newest = _newest(listings, _created)
    if newest is None:
        raise StaleBackupError(f"no backups found in {where}", hint=hint)
    created, name, location = newest
    age = datetime.now(UTC) - created
    label = f"newest backup {name} ({location}) was created {created:%Y-%m-%d %H:%M:%S}Z, {format_duration(age)} ago"
    if age > max_age:
        raise StaleBackupError(f"{label}: older than --max-age {format_duration(max_age)}", hint=hint)
    return f"OK: {label} (max age {format_duration(max_age)})"
