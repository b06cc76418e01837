"""status, wait, check: follow jobs on the queue, and detect backups that silently stopped."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import click

from ..errors import ConfigError, QueueError, StaleBackupError
from . import cli
from .common import run_job
from .render import human_size, render_create, render_diff, render_restore, render_verify

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


# --- rendering a job's result by the job name stored in it ------------------------------------------------

def render_result(result: dict[str, Any]) -> None:
    """Print a finished job's result as the command that started it would have."""
    job = result.get("job")
    if job == "create":
        render_create(result)
    elif job == "diff":
        render_diff(result)
    elif job == "restore" and result.get("dry_run"):
        render_diff(result["diff"])
        click.echo("")
        click.echo(result["message"])
    elif job == "restore":
        render_restore(result)
    elif job == "verify":
        render_verify(result)
    elif job in ("list_local", "list_s3"):
        try:
            from .storage_commands import _print_backups
        except ImportError:  # pragma: no cover - storage commands not installed
            click.echo(json.dumps(result, indent=2, sort_keys=True))
        else:
            _print_backups(result)
    elif job == "upload":
        click.echo(f"Uploaded {result.get('source')} to {result.get('url')} ({human_size(result.get('size', 0))}, "
                   f"sha256 {result.get('sha256')})")
    elif job == "download":
        click.echo(f"Downloaded {result.get('url')} to {result.get('path')} ({human_size(result.get('size', 0))})")
    elif job == "scheduled_backup":
        click.echo(summary(result))
    else:
        click.echo(json.dumps(result, indent=2, sort_keys=True))


def summary(result: Any) -> str:
    if not isinstance(result, dict):
        return str(result)
    job = result.get("job")
    if job == "create":
        return (f"backup {result.get('name')}: {result.get('total_rows')} rows, "
                f"{human_size(result.get('compressed_bytes') or 0)}")
    if job == "scheduled_backup":
        if result.get("skipped"):
            return f"scheduled backup for slot {result.get('slot')} skipped: {result.get('reason')}"
        created = result.get("create") or {}
        uploaded = " and uploaded" if result.get("upload") else ""
        return f"scheduled backup for slot {result.get('slot')}: {created.get('name')}{uploaded}"
    if job in ("list_local", "list_s3"):
        return f"{len(result.get('backups') or [])} backups in {result.get('where')}"
    for key in ("message", "name", "path", "url"):
        if result.get(key):
            return str(result[key])
    return "done"


def _progress_line(meta: dict[str, Any]) -> str:
    rows = f"{meta.get('rows_done', 0):,}" + (f"/{meta['rows_total']:,}" if meta.get("rows_total") else "")
    size = human_size(meta.get("bytes_done") or 0)
    if meta.get("bytes_total"):
        size += f"/{human_size(meta['bytes_total'])}"
    table = f" {meta['table']}" if meta.get("table") else ""
    return f"{meta.get('phase')}{table}: {rows} rows, {size}"


def _app():
    from ..celery_app import app

    return app


def _meta(app: Any, task_id: str) -> dict[str, Any]:
    from ..celery_app import safe_url

    try:
        return app.backend.get_task_meta(task_id)
    except Exception as exc:  # noqa: BLE001
        raise QueueError(f"cannot read job {task_id} from the result backend at {safe_url(app.conf.result_backend)} "
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


def _listing(job: str, local: bool) -> dict[str, Any] | None:
    try:
        return run_job(job, {}, local=local)
    except ConfigError:
        if job == "list_s3":
            return None  # S3 not configured
        raise


@cli.command()
@click.option("--max-age", type=_Duration(), default="26h", show_default=True,
              help="Alert when the newest backup is older than this (e.g. 26h, 90m, 2d).")
@click.option("--target", type=click.Choice(["local", "s3", "all"]), default="all", show_default=True,
              help="Where to look; `all` skips S3 when it is not configured.")
@click.option("--local", is_flag=True, help="List in this process instead of on a Celery worker.")
def check(max_age: timedelta, target: str, local: bool) -> None:
    """Exit 11 when the newest backup is older than --max-age (for monitors: backups that silently stopped)."""
    jobs = {"local": ["list_local"], "s3": ["list_s3"], "all": ["list_local", "list_s3"]}[target]
    newest: tuple[datetime, str, str] | None = None
    looked: list[str] = []
    for job in jobs:
        if target == "s3":
            listing = run_job(job, {}, local=local)
        else:
            listing = _listing(job, local)
        if listing is None:
            continue
        looked.append(f"{listing.get('location')} ({listing.get('where')})")
        for b in listing.get("backups") or []:
            if not b.get("size"):
                continue
            created = datetime.fromisoformat(b["created_at"])
            if created.tzinfo is None:
                created = created.replace(tzinfo=timezone.utc)
            if newest is None or created > newest[0]:
                newest = (created, b["name"], str(listing.get("location")))
    where = ", ".join(looked) or target
    hint = ("Check the worker and Beat (`make worker`, `make beat`) and their logs: the scheduled backup "
            "may have stopped, or be failing (see BACKUP_NOTIFY_WEBHOOK_URL).")
    if newest is None:
        raise StaleBackupError(f"no backups found in {where}", hint=hint)
    created, name, location = newest
    age = datetime.now(timezone.utc) - created
    label = f"newest backup {name} ({location}) was created {created:%Y-%m-%d %H:%M:%S}Z, {format_duration(age)} ago"
    if age > max_age:
        raise StaleBackupError(f"{label}: older than --max-age {format_duration(max_age)}", hint=hint)
    click.echo(f"OK: {label} (max age {format_duration(max_age)})")
