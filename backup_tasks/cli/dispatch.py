"""Where a job runs: on a Celery worker (default: enqueue, then wait with a progress bar) or here (--local).

The client never hangs on a dead queue: it pings the broker (2 s socket timeouts) and asks the workers for a
reply (1.5 s) before enqueuing, and raises QueueError with the hint to start a worker or use --local. The reply
names the database the worker's jobs act on (its DATABASE_URL): when this process's own DATABASE_URL names
another, a note on stderr says so before anything runs (the restore prompts name the database the job itself
reported, see db_commands.confirm_restore). While waiting it follows the job's states (PROGRESS draws the bar);
a job whose worker died (its liveness key in Redis lapsed) is reported as lost, about 20 s after the crash.
Ctrl-C leaves the job running.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .. import dsn, errors
from ..errors import BackupError, ConfigError, ExitCode, QueueError, UsageError
from ..jobs.results import WorkerTarget
from ..names import is_backup_name
from ..progress import Progress
from ..settings import get_settings
from .progressbar import ProgressBar

BROKER_TIMEOUT_S = 2.0
PING_TIMEOUT_S = 1.5
POLL_S = 1.0
QUEUE_HINT = "Start a worker with `make worker`, or use --local to run the job in this process."
DATABASE_JOBS = {"create", "diff", "restore", "restore_s3"}  # jobs that act on a database
_PROGRESS_FIELDS = set(Progress.__dataclass_fields__)
_noted: set[str] = set()  # brokers whose workers' other database was noted: once per command (restore: 2 jobs)


def run_local(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    from ..jobs import run_job

    bar = ProgressBar()
    try:
        return run_job(name, kwargs, progress=bar)
    finally:
        bar.close()


def dispatch(name: str, kwargs: dict[str, Any], *, local: bool, no_wait: bool = False) -> dict[str, Any] | None:
    """Run job `name`: in-process with local, else on a worker. Returns its result dict (None with no_wait)."""
    if local:
        return run_local(name, kwargs)
    from ..celery_app import app

    kwargs = remote_kwargs(name, kwargs)
    worker = ensure_worker(app)
    if name in DATABASE_JOBS and not kwargs.get("database_url") and not kwargs.get("database"):
        note_other_database(app.conf.broker_url, worker)
    task_id = enqueue(app, name, kwargs)
    if no_wait:
        click.echo(task_id)
        click.echo(f"Job {task_id} ({name}) enqueued; follow it with `backupctl wait {task_id}`", err=True)
        return None
    return wait(app, task_id)


# --- before enqueuing -------------------------------------------------------------------------------------

def remote_kwargs(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Arguments as a worker may receive them: backups by name (the worker reads its own BACKUP_DIR), no
    output directory, no password (the broker would keep it)."""
    kwargs = dict(kwargs)
    file = kwargs.get("file")
    if isinstance(file, str) and file:
        path = Path(file)
        if not is_backup_name(path.name):
            raise UsageError(f"{file!r} is not a backup name; a worker reads backups from its BACKUP_DIR by name",
                             hint="Give a name like backup_20251101_123456.backup.gz, or use --local for a path.")
        if path.name != file and path.parent.resolve() != _backup_dir(kwargs.get("database")).resolve():
            click.echo(f"Note: the worker reads {path.name} from its own BACKUP_DIR, not from {path.parent}.",
                       err=True)
        kwargs["file"] = path.name
    if kwargs.get("output_dir"):
        raise UsageError("--output-dir works only with --local: a worker writes backups to its BACKUP_DIR")
    url = kwargs.get("database_url")
    if url and dsn.has_password(url):
        raise UsageError("a --database-url with a password is not sent to a worker (the broker would store it)",
                         hint="Set DATABASE_URL in the worker's environment, or use --local.")
    scratch = kwargs.get("scratch_url")
    if scratch and dsn.has_password(scratch):
        raise UsageError("a --scratch-url with a password is not sent to a worker (the broker would store it)",
                         hint="Set DRILL_DATABASE_URL in the worker's environment, or use --local.")
    return kwargs


def _backup_dir(database: str | None) -> Path:
    """This host's directory for the database's backups (only for the note: the worker has its own)."""
    from .. import databases

    try:
        return Path(databases.select(database).config.BACKUP_DIR)
    except BackupError:  # this shell does not know the name: the worker may
        return get_settings().BACKUP_DIR


def ensure_broker(app: Any) -> None:
    url = app.conf.broker_url
    try:
        if url.split("://", 1)[0] in ("redis", "rediss", "unix"):
            import redis

            redis.Redis.from_url(url, socket_connect_timeout=BROKER_TIMEOUT_S, socket_timeout=BROKER_TIMEOUT_S).ping()
        else:
            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - every way of not reaching the broker is the same answer
        raise QueueError(f"cannot reach the broker at {dsn.mask(url)} ({type(exc).__name__}: {exc})",
                         hint=QUEUE_HINT) from None


def ensure_worker(app: Any) -> WorkerTarget | None:
    """A worker answers (else QueueError); returns the database its jobs act on (None: an older worker that does
    not say)."""
    from ..celery_app import TARGET_COMMAND

    ensure_broker(app)
    try:
        replies = app.control.broadcast(TARGET_COMMAND, reply=True, timeout=PING_TIMEOUT_S, limit=1)
    except Exception as exc:  # noqa: BLE001
        raise QueueError(f"cannot ask the workers for a ping ({type(exc).__name__}: {exc})", hint=QUEUE_HINT) from None
    if not replies:
        raise QueueError(f"no Celery worker answered within {PING_TIMEOUT_S:g} s on {dsn.mask(app.conf.broker_url)}",
                         hint=QUEUE_HINT)
    answer = next(iter(replies[0].values()), None)
    try:
        target = WorkerTarget.model_validate(answer["ok"])
    except (KeyError, TypeError, ValueError):  # {"error": …}: a worker of a version without the command
        target = None
    return target


def note_other_database(broker: str, worker: WorkerTarget | None) -> None:
    """On stderr, before a queued job runs (once per command): this process's own DATABASE_URL (environment or
    .env) names another database than the worker's, which the job will act on."""
    settings = get_settings()
    if broker in _noted or worker is None or "DATABASE_URL" not in settings.model_fields_set:
        return  # said already, or nothing to compare: the worker did not say, or this process has only the default
    _noted.add(broker)
    try:
        mine = dsn.parse(settings.database_url)
    except ConfigError:
        return
    if mine.key != worker.key:
        click.echo(f"Note: this job runs on a worker, on its DATABASE_URL: {worker.description}. This shell's "
                   f"DATABASE_URL ({mine.describe()}) is not used; add --local to use it.", err=True)


def enqueue(app: Any, name: str, kwargs: dict[str, Any]) -> str:
    try:
        result = app.signature(f"backup_tasks.{name}", kwargs=kwargs).apply_async()
    except Exception as exc:  # noqa: BLE001
        raise QueueError(f"could not enqueue {name} ({type(exc).__name__}: {exc})", hint=QUEUE_HINT) from None
    return result.id


# --- waiting ----------------------------------------------------------------------------------------------

def error_from_payload(payload: Any) -> BackupError:
    """The BackupError a job raised on the worker, rebuilt from its JSON payload (same class, hint, exit code,
    transient kind: errors.from_dict)."""
    if not isinstance(payload, dict) or "message" not in payload:
        return BackupError(f"the job failed: {payload}")
    return errors.from_dict(payload)


def failure_error(result: Any, task_id: str) -> BackupError:
    """A FAILURE state's result (an exception rebuilt by Celery, or its raw dict) as a BackupError."""
    payload = result
    if isinstance(result, BaseException):
        args = getattr(result, "args", ())
        if len(args) == 1 and isinstance(args[0], dict) and "message" in args[0]:
            payload = args[0]
        else:
            detail = f"{type(result).__name__}: {result}" if str(result) else type(result).__name__
            return BackupError(f"job {task_id} failed on the worker: {detail}",
                               hint="See the worker's log; a restore that did not finish changed nothing.")
    elif isinstance(result, dict) and "exc_message" in result:
        args = result.get("exc_message") or []
        if isinstance(args, list) and len(args) == 1 and isinstance(args[0], dict):
            payload = args[0]
        else:
            return BackupError(f"job {task_id} failed on the worker: {result.get('exc_type')}: {args}")
    return error_from_payload(payload)


def progress_from_meta(meta: Any) -> Progress | None:
    if not isinstance(meta, dict) or "phase" not in meta:
        return None
    return Progress(**{k: v for k, v in meta.items() if k in _PROGRESS_FIELDS})


def follow(app: Any, task_id: str, on_progress: Callable[[Progress], None] | None = None, *,
           on_state: Callable[[dict], None] | None = None, poll_s: float = POLL_S,
           timeout_s: float | None = None) -> dict[str, Any]:
    """Wait for the job to finish, feeding PROGRESS to on_progress; return its final meta (status, result).

    Raises QueueError when the job's worker died (its liveness key lapsed while the job was STARTED) or
    when timeout_s passed.
    """
    from celery import states
    from celery.exceptions import TimeoutError as CeleryTimeout

    from .. import queue_state

    result = app.AsyncResult(task_id)
    started = time.monotonic()
    missing_since: float | None = None

    def handle(meta: dict) -> None:
        if on_state is not None:
            on_state(meta)
        if meta.get("status") == "PROGRESS" and on_progress is not None:
            event = progress_from_meta(meta.get("result"))
            if event is not None:
                on_progress(event)

    try:
        while True:
            meta = app.backend.get_task_meta(task_id)
            handle(meta)
            status = meta.get("status")
            if status in states.READY_STATES:
                return meta
            if status in (states.STARTED, "PROGRESS"):
                # The key had lapsed (a full TTL without renewal) when first seen missing; LOST_AFTER_S more
                # absorbs a renewal that a Redis hiccup delayed. Kill to report: ~TTL + LOST_AFTER_S + a poll.
                if queue_state.job_alive(task_id):
                    missing_since = None
                elif missing_since is None:
                    missing_since = time.monotonic()
                elif time.monotonic() - missing_since > queue_state.LOST_AFTER_S:
                    raise QueueError(
                        f"job {task_id} was lost: the worker running it stopped without a result (killed or crashed)",
                        hint="A restore that was cut off was rolled back, so nothing changed; a backup left no file. "
                             "Check the worker, then run the job again.")
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                raise QueueError(f"job {task_id} did not finish within {timeout_s:g} s (state {status})",
                                 hint=f"Follow it with `backupctl wait {task_id}`.")
            try:
                result.get(timeout=poll_s, on_message=handle, propagate=False, disable_sync_subtasks=False)
            except CeleryTimeout:
                pass
    except BackupError:
        raise
    except Exception as exc:  # noqa: BLE001 - Redis went away while waiting
        raise QueueError(f"lost the result backend at {dsn.mask(app.conf.result_backend)} while waiting for job "
                         f"{task_id} ({type(exc).__name__}: {exc})",
                         hint=f"The job may still run; follow it with `backupctl wait {task_id}`.") from None
    finally:
        _stop_listening(result)


def _stop_listening(result: Any) -> None:
    """Unsubscribe now, not in AsyncResult.__del__ at interpreter exit (where it fails noisily after Ctrl-C)."""
    try:
        result.backend.remove_pending_result(result)
    except Exception:  # noqa: BLE001 - only cleanup
        pass
    result.backend = None


def outcome(meta: dict, task_id: str) -> dict[str, Any]:
    """The job's result dict for SUCCESS, else the matching BackupError raised."""
    status = meta.get("status")
    if status == "SUCCESS":
        value = meta.get("result")
        if not isinstance(value, dict):
            raise BackupError(f"job {task_id} returned an unexpected result: {value!r}")
        return value
    if status == "FAILURE":
        raise failure_error(meta.get("result"), task_id)
    raise BackupError(f"job {task_id} ended in state {status}", hint="It was revoked or discarded; start it again.")


def wait(app: Any, task_id: str) -> dict[str, Any]:
    """Follow a job with a progress bar and return its result dict (or raise its error). Ctrl-C leaves it running."""
    bar = ProgressBar()
    retries_seen: set[str] = set()

    def on_state(meta: dict) -> None:
        if meta.get("status") == "RETRY":
            error = failure_error(meta.get("result"), task_id)
            if error.message not in retries_seen:
                retries_seen.add(error.message)
                click.echo(f"Job {task_id} hit a transient error and will be retried: {error.message}", err=True)

    try:
        meta = follow(app, task_id, bar, on_state=on_state)
    except KeyboardInterrupt:
        # Not an error (cli/errors.py would call it one, and Click turns KeyboardInterrupt into Abort): the job
        # goes on, the client leaves with the conventional 128 + SIGINT.
        bar.close()
        click.echo(f"\nJob {task_id} keeps running; follow it with `backupctl wait {task_id}`", err=True)
        raise SystemExit(int(ExitCode.INTERRUPTED)) from None
    finally:
        bar.close()
    return outcome(meta, task_id)

