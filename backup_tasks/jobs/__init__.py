"""Jobs: JSON-safe arguments in, core call, JSON-safe dict out.

The same function runs in a Celery task (tasks.py) and in the CLI's `--local` path, so what a user sees
does not depend on where the job ran, and both take the same per-database lock (pg/joblock.py) around the
core call. Nothing here imports Celery or boto3.

A job is asked for a database by name (`database`, never a URL from the queue): run_job resolves it here, in
the process that runs the job, from that process's own configuration (databases.py), and every job receives
the `Database` (`db`: its URL, directory, S3 prefix, retention...) instead of reading the settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .. import databases
from ..databases import Database
from ..errors import BackupError
from ..progress import ProgressFn, no_progress

if TYPE_CHECKING:
    from ..pg.joblock import JobLock

JobFn = Callable[..., dict[str, Any]]
JOBS: dict[str, JobFn] = {}
DEPLOYMENT_JOBS: set[str] = set()  # jobs about the whole deployment: given no `db`
EXCLUSIVE, SHARED = "exclusive", "shared"  # the lock modes of pg/joblock.py, without importing the driver here

# Who runs the job: the Celery task id on a worker, None in this process (--local). Set by run_job for the
# lock's holder name, which a refused job shows (`backupctl wait ID`), without a parameter on every job.
_task_id: ContextVar[str | None] = ContextVar("backup_tasks_job_task_id", default=None)


def job(name: str, *, per_database: bool = True) -> Callable[[JobFn], JobFn]:
    def register(fn: JobFn) -> JobFn:
        JOBS[name] = fn
        if not per_database:
            DEPLOYMENT_JOBS.add(name)
        return fn

    return register


def run_job(name: str, kwargs: dict[str, Any], progress: ProgressFn | None = None, *,
            task_id: str | None = None) -> dict[str, Any]:
    _load(name)
    kwargs = dict(kwargs)
    selected = kwargs.pop("database", None)
    if name not in DEPLOYMENT_JOBS:
        kwargs["db"] = databases.select(selected)
    token = _task_id.set(task_id)
    try:
        return JOBS[name](progress=progress or no_progress, **kwargs)
    except BackupError as exc:
        _point_hint_at_url_variable(exc, kwargs.get("db"))
        raise
    finally:
        _task_id.reset(token)


def _point_hint_at_url_variable(exc: BackupError, db: Database | None) -> None:
    """The driver layer's hints say DATABASE_URL (it knows no deployment); for a database of the file whose URL
    is in ORDERS_DATABASE_URL, "check DATABASE_URL" sends the user to the wrong variable."""
    if db is not None and exc.hint and db.url_variable != "DATABASE_URL":
        exc.hint = exc.hint.replace("DATABASE_URL", f"{db.url_variable} (database {db.name})")


@contextmanager
def database_lock(url: str, mode: str, job_name: str) -> Iterator[JobLock]:
    """The target database's job lock for the block: EXCLUSIVE for a restore, SHARED for a backup, a diff or a
    dry run. BusyError at once when another job holds it in a conflicting mode."""
    from ..pg.joblock import job_lock, local_owner

    with job_lock(url, mode, job_name, _task_id.get() or local_owner()) as lock:
        yield lock


__all__ = ["DEPLOYMENT_JOBS", "EXCLUSIVE", "JOBS", "SHARED", "Database", "database_lock", "job", "run_job"]


# The module that registers each job (importing it does): run_job loads that one only, so a `backupctl create`
# does not import the drill, the restore's transaction code or the S3 jobs (~40 ms of every command's start-up).
# tests/test_startup.py checks the map against the registry.
HOMES = {"create": "db", "diff": "db", "restore": "db", "verify": "db", "drill": "drill", "databases": "deployment",
         **dict.fromkeys(("list_local", "list_s3", "upload", "download", "restore_s3", "verify_s3", "cleanup"),
                         "storage")}


def _load(name: str | None = None) -> None:
    """Register `name`'s job (every job when it is None or unknown here)."""
    from importlib import import_module

    for module in [HOMES[name]] if name in HOMES else sorted(set(HOMES.values())):
        import_module(f".{module}", __name__)
