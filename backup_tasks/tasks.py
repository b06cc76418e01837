"""Celery tasks: one thin task per job, plus the scheduled backup.

A task only does what a queue needs: check its JSON arguments, take the database lock, report progress,
turn failures into JSON-safe payloads (and a webhook), and retry transient errors. The work itself is
`backup_tasks.jobs.run_job(name, kwargs, progress=...)`, the same call the CLI's --local path makes.

Failures: a job's BackupError becomes `JobFailed(payload)`, payload = BackupError.to_dict() + job + task id
(type, message, hint, exit_code), stored by the JSON result backend as the exception's only argument; the
client rebuilds the same BackupError subclass from it. Anything unexpected becomes a payload of type
BackupError (exit code 1); only the worker's log has the traceback.

Acknowledgement and retries (see celery_app.py): restore / restore_s3 are acknowledged on start, are never
redelivered, and never retry once they run; every other job is acknowledged late, so a worker killed under
it hands it to another worker (at most MAX_DELIVERIES times). Retries, with exponential backoff and full
jitter, only for transient errors: S3 throttling or an unreachable endpoint (upload, download, list_s3,
verify_s3, cleanup, and restore_s3 whose S3 part runs before the restore), and a PostgreSQL connection that
could not be made (create: nothing is written before the connection works).
"""

from __future__ import annotations

import os
import re
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

from celery.exceptions import Retry, SoftTimeLimitExceeded
from celery.utils.log import get_task_logger
from celery.utils.time import get_exponential_backoff_interval

from . import locks, notify
from .celery_app import MAX_RETRIES, RETRY_BACKOFF_MAX_S, RETRY_BACKOFF_S, app, load_beat_schedule_module
from .errors import BackupError, UsageError
from .jobs import run_job
from .names import validate_name
from .progress import Progress
from .settings import get_settings

logger = get_task_logger(__name__)

MAX_DELIVERIES = 3  # a late-acked job whose worker died this many times is not run again (celery#9082)
IN_TASK_ATTEMPTS = 3  # upload/cleanup after a backup: retried in the task, so the backup is not made twice
FILE_JOBS = {"diff", "restore", "verify", "upload"}  # jobs that read a backup given as `file`
_SLOT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}Z$")


class JobFailed(Exception):
    """A job failed; args[0] is the JSON-safe payload (type, message, hint, exit_code, job, task_id)."""

    def __init__(self, payload: dict[str, Any]):
        super().__init__(payload)

    @property
    def payload(self) -> dict[str, Any]:
        return self.args[0]

    def __str__(self) -> str:
        p = self.payload if isinstance(self.payload, dict) else {}
        return f"{p.get('type', 'Error')}: {p.get('message', self.args)}"


# --- transient errors -------------------------------------------------------------------------------------

_S3_TRANSIENT_CODES = {
    "Throttling", "ThrottlingException", "ThrottledException", "SlowDown", "RequestLimitExceeded",
    "TooManyRequestsException", "RequestThrottled", "RequestTimeout", "RequestTimeoutException",
    "InternalError", "ServiceUnavailable", "500", "502", "503", "504",
}
_NETWORK_ERRORS = {  # botocore / urllib3 class names (this module imports neither)
    "EndpointConnectionError", "ConnectionClosedError", "ConnectTimeoutError", "ReadTimeoutError",
    "ConnectionError", "ProxyConnectionError", "ProtocolError", "NewConnectionError",
}
_PG_TRANSIENT = (
    "could not connect", "connection refused", "timeout expired", "server closed the connection",
    "the database system is starting up", "the database system is shutting down", "too many connections",
    "connection reset", "could not receive data", "could not send data", "no route to host",
)


def _causes(exc: BaseException):
    """exc and what it was raised from (also across `raise … from None`, which keeps __context__)."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen or len(seen) > 20:
            continue
        seen.add(id(e))
        yield e
        stack += [getattr(e, "last_exception", None), e.__cause__, e.__context__]


def transient_s3(exc: BaseException) -> bool:
    for e in _causes(exc):
        module = type(e).__module__.split(".")[0]
        if module in ("botocore", "urllib3", "s3transfer") and type(e).__name__ in _NETWORK_ERRORS:
            return True
        response = getattr(e, "response", None)
        if module == "botocore" and isinstance(response, dict):
            code = str((response.get("Error") or {}).get("Code", ""))
            status = str((response.get("ResponseMetadata") or {}).get("HTTPStatusCode", ""))
            if code in _S3_TRANSIENT_CODES or status in {"429", "500", "502", "503", "504"}:
                return True
        if isinstance(e, (ConnectionResetError, ConnectionAbortedError)):
            return True
    return False


def transient_db(exc: BaseException) -> bool:
    for e in _causes(exc):
        if type(e).__name__ == "OperationalError" and type(e).__module__.startswith("psycopg2"):
            text = str(e).lower()
            return any(marker in text for marker in _PG_TRANSIENT)
    return False


def _backoff(retries: int) -> float:
    return get_exponential_backoff_interval(RETRY_BACKOFF_S, retries, RETRY_BACKOFF_MAX_S, full_jitter=True)


def _with_retries(fn: Callable[[], dict], retry_if: Callable[[BaseException], bool], what: str) -> dict:
    """Retry a step inside the task (no new message): for steps after a backup was made."""
    for attempt in range(IN_TASK_ATTEMPTS):
        try:
            return fn()
        except BackupError as exc:
            if attempt + 1 >= IN_TASK_ATTEMPTS or not retry_if(exc):
                raise
            delay = min(_backoff(attempt), 60)
            logger.warning("%s failed (%s); retrying in %.0f s", what, exc.message, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


# --- progress ---------------------------------------------------------------------------------------------

class TaskProgress:
    """ProgressFn for a task: a PROGRESS state in the result backend (the client's bar) and a `task-progress`
    event (Flower, which ignores custom states). The core's Throttle already limits the rate.

    The core calls it from background threads in places, where `self.request` (thread-local) is empty: the
    task id and hostname are captured here and passed explicitly.
    """

    def __init__(self, task: Any, job: str):
        self.task, self.job = task, job
        self.task_id, self.hostname = task.request.id, task.request.hostname
        self._lock = threading.Lock()
        self._closed = False

    def __call__(self, event: Progress) -> None:
        fields = {"job": self.job, **event.to_dict()}
        with self._lock:
            if self._closed:  # never overwrite the final state with a late PROGRESS
                return
            try:
                meta = {**fields, "hostname": self.hostname, "pid": os.getpid()}  # `status` shows where it runs
                self.task.update_state(task_id=self.task_id, state="PROGRESS", meta=meta)
                # (events carry hostname and pid themselves)
                with self.task.app.events.default_dispatcher(hostname=self.hostname) as dispatcher:
                    dispatcher.send("task-progress", uuid=self.task_id, **fields)
            except Exception as exc:  # noqa: BLE001 - progress is best effort, never the job's failure
                logger.warning("progress update for %s failed: %s", self.task_id, exc)

    def close(self) -> None:
        with self._lock:
            self._closed = True


# --- running a job ----------------------------------------------------------------------------------------

def _database_name(database_url: str | None) -> str | None:
    try:
        return locks.database_identity(database_url or get_settings().database_url)[0] or None
    except Exception:  # noqa: BLE001 - only for messages
        return None


def _fail(task: Any, job: str, error: dict[str, Any], info: dict[str, Any]) -> None:
    payload = {**error, "job": job, "task_id": task.request.id}
    database = _database_name(info.get("database_url"))
    logger.error("job %s failed (task %s, database %s): %s", job, task.request.id, database, payload["message"])
    notify.notify_failure(job=job, database=database, error=payload["message"], file=info.get("file"),
                          task_id=task.request.id)
    raise JobFailed(payload) from None


def _execute(task: Any, job: str, info: dict[str, Any], body: Callable[[], dict],
             retry_if: Callable[[BaseException], bool] | None = None) -> dict[str, Any]:
    """Run body(); failures become JobFailed (logged, notified), transient ones a retry while any are left.

    `info` holds what a failure report names (database_url, file); the body may add to it.
    """
    request = task.request
    try:
        if task.acks_late:
            deliveries = locks.count_delivery(request.id, request.retries or 0)
            if deliveries > MAX_DELIVERIES:
                raise BackupError(
                    f"{job} was delivered {deliveries} times and its worker died each time (killed, or out of "
                    "memory); not running it again", hint="Check the worker's memory and logs, then start it again.")
        return body()
    except Retry:
        raise
    except BackupError as exc:
        if retry_if is not None and retry_if(exc) and (request.retries or 0) < task.max_retries:
            countdown = _backoff(request.retries or 0)
            logger.warning("job %s hit a transient error (%s); retry %d of %d in %.0f s", job, exc.message,
                           (request.retries or 0) + 1, task.max_retries, countdown)
            raise task.retry(countdown=countdown, exc=JobFailed({**exc.to_dict(), "job": job})) from None
        _fail(task, job, exc.to_dict(), info)
    except SoftTimeLimitExceeded:
        limit = get_settings().CELERY_TASK_SOFT_TIME_LIMIT
        _fail(task, job, BackupError(
            f"{job} ran longer than CELERY_TASK_SOFT_TIME_LIMIT={limit}s and was stopped",
            hint="A stopped backup leaves no file and a stopped restore changes nothing; raise the limit and retry.",
        ).to_dict(), info)
    except Exception as exc:  # noqa: BLE001 - an unexpected failure is still reported as JSON
        logger.exception("job %s failed unexpectedly", job)
        _fail(task, job, BackupError(f"{job} failed unexpectedly: {type(exc).__name__}: {exc}",
                                     hint="See the worker's log for the traceback.").to_dict(), info)
    raise AssertionError("unreachable")


def _checked_kwargs(job: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """What a job may be asked through the queue: backups by name in BACKUP_DIR, nothing written elsewhere."""
    kwargs = dict(kwargs)
    if job in FILE_JOBS:
        kwargs["allow_paths"] = False
    if job == "upload":
        validate_name(kwargs.get("file"))
    if job == "create" and kwargs.get("output_dir"):
        raise UsageError("--output-dir is not accepted by a worker: it writes backups to its BACKUP_DIR",
                         hint="Run with --local to write elsewhere.")
    return kwargs


def _lock_mode(job: str, kwargs: dict[str, Any]) -> str | None:
    if job in ("restore", "restore_s3"):
        return locks.SHARED if kwargs.get("dry_run") else locks.EXCLUSIVE
    if job in ("create", "diff"):
        return locks.SHARED
    return None


def _run(task: Any, job: str, raw_kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs = _checked_kwargs(job, raw_kwargs)
    upload = job == "create" and bool(kwargs.pop("upload", False))
    progress = TaskProgress(task, job)
    try:
        with locks.job_lease(task.request.id, job):
            with locks.job_lease(task.request.id, job, database_url=kwargs.get("database_url"),
                                 mode=_lock_mode(job, kwargs), alive=False):
                result = run_job(job, kwargs, progress=progress)
            if upload:  # after the lock; retried here, not by a new message that would back up again
                result["upload"] = _with_retries(lambda: run_job("upload", {"file": result["name"]}, progress),
                                                 transient_s3, "upload")
    finally:
        progress.close()
    return {"job": job, **result}


def _define(job: str, *, acks_late: bool, retry_if: Callable[[BaseException], bool] | None = None):
    def run(self, **kwargs: Any) -> dict[str, Any]:
        info = {"database_url": kwargs.get("database_url"), "file": kwargs.get("file") or kwargs.get("name")}
        return _execute(self, job, info, lambda: _run(self, job, kwargs), retry_if)

    run.__name__ = run.__qualname__ = job
    run.__doc__ = f"The {job!r} job (backup_tasks.jobs) on a worker."
    return app.task(bind=True, name=f"backup_tasks.{job}", acks_late=acks_late, reject_on_worker_lost=acks_late,
                    throws=(JobFailed,), max_retries=MAX_RETRIES)(run)


create = _define("create", acks_late=True, retry_if=transient_db)
diff = _define("diff", acks_late=True)
restore = _define("restore", acks_late=False)  # never redelivered, never retried: see the module docstring
verify = _define("verify", acks_late=True)
list_local = _define("list_local", acks_late=True)
upload = _define("upload", acks_late=True, retry_if=transient_s3)
download = _define("download", acks_late=True, retry_if=transient_s3)
list_s3 = _define("list_s3", acks_late=True, retry_if=transient_s3)
restore_s3 = _define("restore_s3", acks_late=False, retry_if=transient_s3)  # S3 errors only arise before restoring
verify_s3 = _define("verify_s3", acks_late=True, retry_if=transient_s3)
cleanup = _define("cleanup", acks_late=True, retry_if=transient_s3)


# --- the scheduled backup ---------------------------------------------------------------------------------

def _slot(cron: str | None, tz: str | None, slot: str | None) -> str:
    if slot is not None:
        if not isinstance(slot, str) or not _SLOT_RE.match(slot):
            raise UsageError(f"invalid schedule slot {slot!r}", hint="A slot looks like 2025-11-01T02:00Z.")
        return slot
    settings = get_settings()
    schedule = load_beat_schedule_module()
    due = schedule.previous_due(cron or settings.BACKUP_CRON, datetime.now(timezone.utc),
                                tz or settings.BACKUP_TIMEZONE)
    return schedule.slot_id(due)


def _scheduled(task: Any, info: dict[str, Any], cron: str | None, tz: str | None, slot: str | None) -> dict:
    settings = get_settings()
    slot = _slot(cron, tz, slot)
    db = locks.database_key(settings.database_url)
    out: dict[str, Any] = {"job": "scheduled_backup", "slot": slot, "database": _database_name(None)}
    status, detail = locks.claim_slot(db, slot, task.request.id)
    if status == "taken":
        logger.warning("scheduled backup for slot %s skipped: task %s already has it", slot, detail)
        return {**out, "skipped": True, "reason": f"slot {slot} was already taken by task {detail}"}
    progress = TaskProgress(task, "scheduled_backup")
    try:
        with locks.job_lease(task.request.id, "scheduled_backup"):
            if status == "created":  # this task made the backup, then its worker died: finish the rest
                created: dict[str, Any] = {"name": detail, "resumed": True}
            else:
                with locks.job_lease(task.request.id, "scheduled_backup", mode=locks.SHARED, alive=False):
                    created = run_job("create", {}, progress=progress)
                locks.slot_created(db, slot, task.request.id, created["name"])
            info["file"] = created["name"]
            uploaded = None
            if settings.s3_enabled:
                uploaded = _with_retries(lambda: run_job("upload", {"file": created["name"]}, progress),
                                         transient_s3, "upload")
            cleaned = _with_retries(lambda: run_job("cleanup", {"target": "all"}, progress), transient_s3,
                                    "cleanup")
    finally:
        progress.close()
    return {**out, "skipped": False, "create": created, "upload": uploaded, "cleanup": cleaned}


@app.task(bind=True, name="backup_tasks.scheduled_backup", acks_late=True, reject_on_worker_lost=True,
          throws=(JobFailed,), max_retries=MAX_RETRIES)
def scheduled_backup(self, cron: str | None = None, timezone: str | None = None,
                     slot: str | None = None) -> dict[str, Any]:
    """Beat's job: create -> upload (when S3 is configured) -> cleanup, at most once per schedule slot."""
    info: dict[str, Any] = {"database_url": None, "file": None}
    return _execute(self, "scheduled_backup", info, lambda: _scheduled(self, info, cron, timezone, slot),
                    transient_db)
