"""Celery tasks: one per job, plus the scheduled backup. What they share lives in JobTask, a `celery.Task`
subclass (Celery's documented place for it): delivery counting (before_start), failure reports (on_failure),
retries (autoretry_for + retry_backoff), the acknowledgement policy per task.

A task only does what a queue needs: check its JSON arguments, keep its liveness key, report progress, turn
failures into JSON-safe payloads (and a webhook), and retry transient errors. The work itself, and the
per-database lock, is `backup_tasks.jobs.run_job(name, kwargs, progress=...)`, the same call the CLI's --local
path makes.

Failures: a job's BackupError becomes `JobFailed(payload)`, payload = BackupError.to_dict() (type, message, hint,
exit_code, transient) + job + task id + file, stored by the JSON result backend as the exception's only argument;
the client rebuilds the same BackupError subclass from it. Anything unexpected becomes a payload of type
BackupError (exit code 1); only the worker's log has the traceback.

Acknowledgement (see celery_app.py): restore / restore_s3 are acknowledged on start and are never redelivered;
every other job is acknowledged late, so a worker killed under it hands it to another worker (at most
MAX_DELIVERIES times).

Retries: each task declares the Transient kinds it retries (`retry_on`); an error's kind is set where it is
raised (pg/connection.py for a connection that could not be made, storage/s3.py for throttling, 5xx or an
unreachable endpoint), so nothing here guesses from class names or messages. create and the scheduled backup
retry DATABASE (nothing is written before the connection works); the S3 jobs retry STORAGE (restore_s3's S3 part
runs before its restore); restore never retries. A retry is a new message after 5 s, 10 s, 20 s, 40 s with full
jitter (capped at 5 min), far below the visibility timeout.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import PurePath
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.log import get_task_logger
from celery.utils.time import get_exponential_backoff_interval
from celery.worker.control import inspect_command

from . import databases, dsn, notify, outcomes, queue_state, scheduled
from .celery_app import (
    MAX_RETRIES,
    RETRY_BACKOFF_MAX_S,
    RETRY_BACKOFF_S,
    TARGET_COMMAND,
    app,
)
from .core.destination import LocalPartStore
from .core.parallel import PartStore
from .errors import BackupError, Transient, UsageError
from .jobs import run_job
from .jobs.results import WorkerTarget
from .memory import release_freed_memory
from .names import validate_name
from .partwork import BoardRunner, PartBoard, help_with
from .progress import Progress, ProgressFn, Throttle
from .settings import get_settings

logger = get_task_logger(__name__)

MAX_DELIVERIES = 3  # a late-acked job whose worker died this many times is not run again (celery#9082)
IN_TASK_ATTEMPTS = 3  # upload/cleanup after a backup: retried in the task, so the backup is not made twice
FILE_JOBS = {"diff", "restore", "verify", "upload", "drill"}  # jobs that read a backup given as `file`
# A mistyped name or a missing file was already told to the person who typed it: no message to a channel.
QUIET_FAILURES = {"UsageError", "NotFoundError", "AbortedError"}
# A parallel backup's helpers fail with their coordinator (reported once, as its job); the databases listing is
# a question, not a job on a database.
UNREPORTED = {"backup_parts", "databases"}
# Successes worth a message.
SUCCESS_NOTICES = {"create", "scheduled_backup", "restore", "restore_s3", "drill", "scheduled_drill"}
DATABASE, STORAGE = frozenset({Transient.DATABASE}), frozenset({Transient.STORAGE})


class JobFailed(Exception):
    """A job failed; args[0] is the JSON-safe payload (type, message, hint, exit_code, transient, job, task_id)."""

    def __init__(self, payload: dict[str, Any]):
        super().__init__(payload)

    @property
    def payload(self) -> dict[str, Any]:
        return self.args[0]

    def __str__(self) -> str:
        p = self.payload if isinstance(self.payload, dict) else {}
        return f"{p.get('type', 'Error')}: {p.get('message', self.args)}"


class TransientJobFailed(JobFailed):
    """A failure of a kind the task retries (its `retry_on`): Celery's autoretry_for catches this class."""


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


# --- the task class ---------------------------------------------------------------------------------------

class JobTask(Task):
    """Plumbing shared by every job's task; a task's body calls `self.perform(kwargs)`.

    Class attributes are the policy, overridden per task in its @app.task(...) line: `retry_on` (the Transient
    kinds it retries), `acks_late`/`reject_on_worker_lost` (late acknowledgement, for idempotent jobs only).
    """

    retry_on: frozenset[Transient] = frozenset()
    acks_late = True
    reject_on_worker_lost = True
    throws = (JobFailed,)  # expected failures: logged by Celery at INFO without a traceback (on_failure logs them)
    autoretry_for = (TransientJobFailed,)
    max_retries = MAX_RETRIES
    retry_backoff = RETRY_BACKOFF_S
    retry_backoff_max = RETRY_BACKOFF_MAX_S
    retry_jitter = True

    @property
    def job(self) -> str:
        return self.name.removeprefix("backup_tasks.")

    def before_start(self, task_id: str, args: tuple, kwargs: dict) -> None:
        """Count deliveries of a late-acked job: one that killed its worker MAX_DELIVERIES times is not run again."""
        if not self.acks_late:
            return
        try:
            deliveries = queue_state.count_delivery(task_id, self.request.retries or 0)
        except BackupError as exc:
            raise self.failed(exc, {}) from None
        if deliveries > MAX_DELIVERIES:
            raise self.failed(BackupError(
                f"{self.job} was delivered {deliveries} times and its worker died each time (killed, or out of "
                "memory); not running it again", hint="Check the worker's memory and logs, then start it again."), {})

    def perform(self, kwargs: dict[str, Any],
                body: Callable[[dict[str, Any], ProgressFn], dict[str, Any]] | None = None) -> dict[str, Any]:
        """Run the job (or `body(info, progress)`) while its liveness key is kept; every failure leaves as JobFailed.

        `info` holds what a failure report names besides the arguments (the backup file); a body may add to it.
        """
        self.request.backup_tasks_started = time.monotonic()  # for the reports of on_success / on_failure
        info: dict[str, Any] = {"file": kwargs.get("file") or kwargs.get("name")}
        progress = TaskProgress(self, self.job)
        try:
            with queue_state.alive_while(self.request.id):
                result = body(info, progress) if body else self._run_job(kwargs, progress)
            return {"job": self.job, **result}
        except BackupError as exc:
            raise self.failed(exc, info) from None
        except SoftTimeLimitExceeded:
            limit = get_settings().CELERY_TASK_SOFT_TIME_LIMIT
            raise self.failed(BackupError(
                f"{self.job} ran longer than CELERY_TASK_SOFT_TIME_LIMIT={limit}s and was stopped",
                hint="A stopped backup leaves no file and a stopped restore changes nothing; raise the limit, retry.",
            ), info) from None
        except Exception as exc:
            logger.exception("job %s failed unexpectedly", self.job)
            raise self.failed(BackupError(f"{self.job} failed unexpectedly: {type(exc).__name__}: {exc}",
                                          hint="See the worker's log for the traceback."), info) from None
        finally:
            progress.close()

    def _run_job(self, kwargs: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        kwargs = checked_kwargs(self.job, kwargs)
        upload = self.job == "create" and bool(kwargs.pop("upload", False))
        if self.job == "create":
            kwargs["runner_factory"] = self.part_runner
        result = run_job(self.job, kwargs, progress, task_id=self.request.id)
        if upload:  # after the backup and its lock; retried here, not by a new message that would back up again
            args = {"file": result["name"], "database": kwargs.get("database")}
            result["upload"] = retried_in_task(lambda: run_job("upload", args, progress, task_id=self.request.id),
                                               "upload")
        return result

    def part_runner(self, jobs: int, store: PartStore) -> BoardRunner:
        """How this task writes a parallel backup: parts on a Redis board, this task taking parts too, helper
        tasks on this worker's own node when the parts go to its directory (its pool processes share it:
        worker_direct queues), on any worker when they go to S3."""
        hostname = self.request.hostname
        local = isinstance(store, LocalPartStore)

        def send_helpers(count: int) -> None:
            route = {"exchange": "C.dq2", "routing_key": hostname} if local else {}
            for _ in range(count):
                self.app.send_task("backup_tasks.backup_parts", kwargs={"job": board_job}, **route)

        board_job = secrets.token_hex(8)  # a redelivered coordinator starts a new board, with a new snapshot
        return BoardRunner(queue_state.client(), board_job, jobs, store, send_helpers)

    def failed(self, exc: BackupError, info: dict[str, Any]) -> JobFailed:
        """The JobFailed to raise for `exc`: TransientJobFailed (retried) when its kind is one this task retries."""
        file = info.get("file")
        payload = {**exc.to_dict(), "job": self.job, "task_id": self.request.id,
                   "file": PurePath(file).name if isinstance(file, str) and file else None}
        return (TransientJobFailed if exc.transient in self.retry_on else JobFailed)(payload)

    def on_retry(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        logger.warning("job %s hit a transient error (%s); retry %d of %d", self.job, _message(exc),
                       (self.request.retries or 0) + 1, self.max_retries)

    def on_success(self, retval: Any, task_id: str, args: tuple, kwargs: dict) -> None:
        """Recorded for the metrics; a backup or restore is told to BACKUP_NOTIFY_SUCCESS_URLS, if set."""
        name = selected_name(kwargs)
        result = retval if isinstance(retval, dict) else {}
        if name is None or self.job in UNREPORTED or result.get("fanned_out") or result.get("skipped"):
            return  # a server's fan-out reports nothing itself (each database does); a skipped slot did nothing
        _best_effort(outcomes.record_success, name, self.job, result)
        if self.job in SUCCESS_NOTICES and notify.notification_urls(True):
            facts = outcomes.BackupFacts.of(self.job, result)
            notify.send(notify.Notice(name, self.job, True, self._elapsed(result), facts and facts.bytes,
                                      facts and facts.rows, (facts and facts.name) or result.get("file"),
                                      target=target_description(kwargs)))

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        """Every failure is logged at ERROR (with the database by name), recorded for the metrics, POSTed to the
        webhook and sent to BACKUP_NOTIFY_URLS, if set."""
        payload = exc.payload if isinstance(exc, JobFailed) and isinstance(exc.payload, dict) else {}
        database = database_name(kwargs.get("database_url"), kwargs.get("database"))
        message = _message(exc)
        file = payload.get("file") or kwargs.get("file") or kwargs.get("name")
        logger.error("job %s failed (task %s, database %s): %s", self.job, task_id, database, message)
        notify.notify_failure(job=self.job, database=database, error=message, file=file, task_id=task_id)
        if self.job in UNREPORTED:
            return
        name = selected_name(kwargs)
        if name is not None:
            _best_effort(outcomes.record_failure, name, self.job, message)
        if payload.get("type") not in QUIET_FAILURES:
            notify.send(notify.Notice(name or str(database), self.job, False, self._elapsed({}), file=file,
                                      error=message, hint=payload.get("hint"), target=target_description(kwargs)))

    def after_return(self, status: str, retval: Any, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        """The pool process outlives the job: what the job freed goes back to the system before the next one."""
        release_freed_memory()

    def _elapsed(self, result: dict[str, Any]) -> float | None:
        started = getattr(self.request, "backup_tasks_started", None)
        return time.monotonic() - started if started is not None else result.get("duration_s")


def _message(exc: BaseException) -> str:
    payload = exc.payload if isinstance(exc, JobFailed) else None
    if isinstance(payload, dict) and payload.get("message"):
        return str(payload["message"])
    return dsn.mask(f"{type(exc).__name__}: {exc}")


def database_name(database_url: str | None, database: str | None = None) -> str | None:
    """The target database's name for reports (never the URL)."""
    try:
        return dsn.parse(database_url or databases.select(database).url).name or None
    except Exception:  # noqa: BLE001 - only for messages
        return None


def selected_name(kwargs: dict[str, Any]) -> str | None:
    """The job's database by its name in this deployment (`default` without a databases file)."""
    try:
        return databases.select(kwargs.get("database")).name
    except Exception:  # noqa: BLE001 - only for reports: the job itself said what was wrong
        return None


def target_description(kwargs: dict[str, Any]) -> str | None:
    try:
        return dsn.describe(kwargs.get("database_url") or databases.select(kwargs.get("database")).url)
    except Exception:  # noqa: BLE001 - only for messages
        return None


def _best_effort(fn: Callable[..., None], *args: Any) -> None:
    """Recording an outcome must not turn a finished job into a failed one (Redis hiccup)."""
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001
        logger.warning("could not record the job's outcome: %s", exc)


def checked_kwargs(job: str, kwargs: dict[str, Any]) -> dict[str, Any]:
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


def retried_in_task(fn: Callable[[], dict], what: str) -> dict:
    """Retry a storage step inside the task (no new message): for steps after a backup was made."""
    for attempt in range(IN_TASK_ATTEMPTS):
        try:
            return fn()
        except BackupError as exc:
            if attempt + 1 >= IN_TASK_ATTEMPTS or exc.transient not in STORAGE:
                raise
            delay = min(get_exponential_backoff_interval(RETRY_BACKOFF_S, attempt, RETRY_BACKOFF_MAX_S,
                                                         full_jitter=True), 60)
            logger.warning("%s failed (%s); retrying in %.0f s", what, exc.message, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


# --- the tasks: one per job, each with its policy ---------------------------------------------------------

@app.task(base=JobTask, bind=True, name="backup_tasks.create", retry_on=DATABASE)
def create(self: JobTask, **kwargs: Any) -> dict[str, Any]:
    """Back up the worker's database (then upload it, with upload=True)."""
    return self.perform(kwargs)


@app.task(base=JobTask, bind=True, name="backup_tasks.diff")
def diff(self: JobTask, **kwargs: Any) -> dict[str, Any]:
    return self.perform(kwargs)


# Acknowledged on start, never redelivered, never retried: a restore cut off by a crash was rolled back, and
# one `backupctl restore` must never replace the data twice (e.g. hours later, over rows written since).
@app.task(base=JobTask, bind=True, name="backup_tasks.restore", acks_late=False, reject_on_worker_lost=False)
def restore(self: JobTask, **kwargs: Any) -> dict[str, Any]:
    return self.perform(kwargs)


@app.task(base=JobTask, bind=True, name="backup_tasks.restore_s3", acks_late=False, reject_on_worker_lost=False,
          retry_on=STORAGE)
def restore_s3(self: JobTask, **kwargs: Any) -> dict[str, Any]:
    """Download, verify, restore; S3 errors (retried) only arise before the restore begins."""
    return self.perform(kwargs)


@app.task(base=JobTask, bind=True, name="backup_tasks.verify")
def verify(self: JobTask, **kwargs: Any) -> dict[str, Any]:
    return self.perform(kwargs)


@app.task(base=JobTask, bind=True, name="backup_tasks.list_local")
def list_local(self: JobTask, **kwargs: Any) -> dict[str, Any]:
    return self.perform(kwargs)


@app.task(base=JobTask, bind=True, name="backup_tasks.upload", retry_on=STORAGE)
def upload(self: JobTask, **kwargs: Any) -> dict[str, Any]:
    return self.perform(kwargs)


@app.task(base=JobTask, bind=True, name="backup_tasks.download", retry_on=STORAGE)
def download(self: JobTask, **kwargs: Any) -> dict[str, Any]:
    return self.perform(kwargs)


@app.task(base=JobTask, bind=True, name="backup_tasks.list_s3", retry_on=STORAGE)
def list_s3(self: JobTask, **kwargs: Any) -> dict[str, Any]:
    return self.perform(kwargs)


@app.task(base=JobTask, bind=True, name="backup_tasks.verify_s3", retry_on=STORAGE)
def verify_s3(self: JobTask, **kwargs: Any) -> dict[str, Any]:
    return self.perform(kwargs)


@app.task(base=JobTask, bind=True, name="backup_tasks.cleanup", retry_on=STORAGE)
def cleanup(self: JobTask, **kwargs: Any) -> dict[str, Any]:
    return self.perform(kwargs)


# Late-acked: a helper whose worker died is delivered again and takes parts again while the backup runs; after
# it ended, a redelivered helper finds the board closed and does nothing.
@app.task(base=JobTask, bind=True, name="backup_tasks.backup_parts")
def backup_parts(self: JobTask, job: str) -> dict[str, Any]:
    """Help a parallel backup: write its parts until none is waiting (partwork.help_with)."""
    def body(info: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        ticks = _PartTicks(progress)
        return {"board": job, "parts_written": help_with(PartBoard(queue_state.client(), job), ticks.add)}

    return self.perform({}, body)


class _PartTicks:
    """A helper's own progress (task-progress events: Flower shows each part's writer)."""

    def __init__(self, progress: ProgressFn):
        self.progress, self.rows, self.bytes = Throttle(progress), 0, 0

    def add(self, rows: int, size: int) -> None:
        self.rows += rows
        self.bytes += size
        self.progress(Progress("backup part", None, self.rows, None, self.bytes))


@app.task(base=JobTask, bind=True, name="backup_tasks.databases")
def databases_job(self: JobTask, **kwargs: Any) -> dict[str, Any]:
    """The deployment's databases as this worker sees them (its file, its environment, its BACKUP_DIR)."""
    return self.perform(kwargs)


# --- what the client asks before enqueuing ---------------------------------------------------------------

@inspect_command(name=TARGET_COMMAND)
def backup_tasks_target(state: Any, **kwargs: Any) -> dict[str, Any]:
    """The database this worker's jobs act on (name, host, port; never the URL). Answered by the worker's main
    process, even while every pool process runs a job: the client's ping (cli/dispatch.py) asks it."""
    return {"ok": WorkerTarget.of(get_settings().database_url).model_dump()}


# --- the scheduled backup ---------------------------------------------------------------------------------

@app.task(base=JobTask, bind=True, name="backup_tasks.scheduled_backup", retry_on=DATABASE)
def scheduled_backup(self: JobTask, cron: str | None = None, timezone: str | None = None,
                     slot: str | None = None, database: str | None = None) -> dict[str, Any]:
    """Beat's job: create -> upload (when S3 is configured) -> cleanup, at most once per schedule slot, for one
    database (by its name in the deployment; None: the only one)."""
    kwargs = {"database": database} if database is not None else {}
    run = scheduled.ScheduledRun(self.request.id, retried_in_task, self.part_runner,
                                 send=lambda kw: scheduled_backup.apply_async(kwargs=kw))
    return self.perform(kwargs, lambda info, progress: run.run(info, progress, database, cron, timezone, slot))


# --- restore drills ---------------------------------------------------------------------------------------

# Late-acked (a drill only overwrites the scratch database: running it again is harmless); a scratch server
# that cannot be reached yet is retried.
@app.task(base=JobTask, bind=True, name="backup_tasks.drill", retry_on=DATABASE)
def drill(self: JobTask, **kwargs: Any) -> dict[str, Any]:
    """Restore a backup into DRILL_DATABASE_URL and prove it restored exactly (jobs/drill.py)."""
    return self.perform(kwargs)


@app.task(base=JobTask, bind=True, name="backup_tasks.scheduled_drill", retry_on=DATABASE)
def scheduled_drill(self: JobTask, cron: str | None = None, timezone: str | None = None,
                    slot: str | None = None, database: str | None = None) -> dict[str, Any]:
    """Beat's drill of one database's newest backup, at most once per BACKUP_DRILL_CRON slot."""
    kwargs = {"database": database} if database is not None else {}
    run = scheduled.ScheduledDrill(self.request.id)
    return self.perform(kwargs, lambda info, progress: run.run(info, progress, database, cron, timezone, slot))
