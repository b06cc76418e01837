"""Where a job runs: on a Celery worker (default: enqueue, then wait with a progress bar) or here (--local).

The client never hangs on a dead queue: it pings the broker (2 s socket timeouts) and asks the workers for a
pong (1.5 s) before enqueuing, and raises QueueError with the hint to start a worker or use --local.
While waiting it follows the job's states (PROGRESS draws the bar); a job whose worker died (its liveness
key in Redis lapsed) is reported as lost instead of being waited on forever. Ctrl-C leaves the job running.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import click

from .. import errors
from ..errors import BackupError, ExitCode, QueueError, UsageError
from ..names import is_backup_name
from ..progress import Progress
from ..settings import get_settings
from .progressbar import ProgressBar

BROKER_TIMEOUT_S = 2.0
PING_TIMEOUT_S = 1.5
POLL_S = 1.0
QUEUE_HINT = "Start a worker with `make worker`, or use --local to run the job in this process."
_PROGRESS_FIELDS = set(Progress.__dataclass_fields__)


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
    ensure_worker(app)
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
        if path.name != file and path.parent.resolve() != get_settings().BACKUP_DIR.resolve():
            click.echo(f"Note: the worker reads {path.name} from its own BACKUP_DIR, not from {path.parent}.",
                       err=True)
        kwargs["file"] = path.name
    if kwargs.get("output_dir"):
        raise UsageError("--output-dir works only with --local: a worker writes backups to its BACKUP_DIR")
    url = kwargs.get("database_url")
    if url and _has_password(url):
        raise UsageError("a --database-url with a password is not sent to a worker (the broker would store it)",
                         hint="Set DATABASE_URL in the worker's environment, or use --local.")
    return kwargs


def _has_password(url: str) -> bool:
    if "://" in url:
        try:
            return bool(urlsplit(url).password) or "password=" in urlsplit(url).query
        except ValueError:
            return True
    return "password=" in url


def ensure_broker(app: Any) -> None:
    from ..celery_app import safe_url

    url = app.conf.broker_url
    try:
        if url.split("://", 1)[0] in ("redis", "rediss", "unix"):
            import redis

            redis.Redis.from_url(url, socket_connect_timeout=BROKER_TIMEOUT_S, socket_timeout=BROKER_TIMEOUT_S).ping()
        else:
            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - every way of not reaching the broker is the same answer
        raise QueueError(f"cannot reach the broker at {safe_url(url)} ({type(exc).__name__}: {exc})",
                         hint=QUEUE_HINT) from None


def ensure_worker(app: Any) -> None:
    ensure_broker(app)
    try:
        replies = app.control.ping(timeout=PING_TIMEOUT_S, limit=1)
    except Exception as exc:  # noqa: BLE001
        raise QueueError(f"cannot ask the workers for a ping ({type(exc).__name__}: {exc})", hint=QUEUE_HINT) from None
    if not replies:
        from ..celery_app import safe_url

        raise QueueError(f"no Celery worker answered within {PING_TIMEOUT_S:g} s on {safe_url(app.conf.broker_url)}",
                         hint=QUEUE_HINT)


def enqueue(app: Any, name: str, kwargs: dict[str, Any]) -> str:
    try:
        result = app.signature(f"backup_tasks.{name}", kwargs=kwargs).apply_async()
    except Exception as exc:  # noqa: BLE001
        raise QueueError(f"could not enqueue {name} ({type(exc).__name__}: {exc})", hint=QUEUE_HINT) from None
    return result.id


# --- waiting ----------------------------------------------------------------------------------------------

def error_from_payload(payload: Any) -> BackupError:
    """The BackupError a job raised on the worker, rebuilt from its JSON payload (same class, hint, exit code)."""
    if not isinstance(payload, dict) or "message" not in payload:
        return BackupError(f"the job failed: {payload}")
    cls = getattr(errors, str(payload.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, BackupError)):
        cls = BackupError
    exc = cls(str(payload["message"]), payload.get("hint"))
    code = payload.get("exit_code")
    if isinstance(code, int) and code != int(exc.exit_code):
        try:
            exc.exit_code = errors.ExitCode(code)
        except ValueError:
            pass
    return exc


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


def _lost_after_s() -> float:
    # The key is renewed every TTL/3 and had lapsed (a full TTL without renewal) when first seen missing;
    # one more TTL absorbs a heartbeat that a Redis hiccup delayed.
    return float(get_settings().JOB_LOCK_TTL_S) + POLL_S


def follow(app: Any, task_id: str, on_progress: Callable[[Progress], None] | None = None, *,
           on_state: Callable[[dict], None] | None = None, poll_s: float = POLL_S,
           timeout_s: float | None = None) -> dict[str, Any]:
    """Wait for the job to finish, feeding PROGRESS to on_progress; return its final meta (status, result).

    Raises QueueError when the job's worker died (its liveness key lapsed while the job was STARTED) or
    when timeout_s passed.
    """
    from celery import states
    from celery.exceptions import TimeoutError as CeleryTimeout

    from .. import locks

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
                if locks.job_alive(task_id):
                    missing_since = None
                elif missing_since is None:
                    missing_since = time.monotonic()
                elif time.monotonic() - missing_since > _lost_after_s():
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
        from ..celery_app import safe_url

        raise QueueError(f"lost the result backend at {safe_url(app.conf.result_backend)} while waiting for job "
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

