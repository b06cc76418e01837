"""Database jobs: create, diff, restore, verify. JSON-safe arguments in, JSON-safe dicts out."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import core, dsn
from ..errors import NotFoundError, UsageError
from ..names import is_backup_name
from ..progress import ProgressFn
from . import EXCLUSIVE, SHARED, Database, database_lock, job
from .options import database_url as _url
from .options import engine_options
from .results import CreateJobResult, DiffJobResult, RestoreJobResult, VerifyJobResult

if TYPE_CHECKING:
    from ..core.destination import Destination
    from ..core.parallel import PartRunner, PartStore

# Each job imports the part of the engine it runs when it runs (core's entry points load on first use): a
# `backupctl create` does not pay for the diff, the restore, the parallel backup or boto3 at start-up.


def resolve_backup_file(file: str, backup_dir: Path, *, allow_paths: bool = True) -> Path:
    """A bare backup name is looked up in `backup_dir` (the database's BACKUP_DIR); anything else is a path
    (only where allow_paths).

    Jobs that arrive through the queue pass allow_paths=False: a worker reads nothing outside BACKUP_DIR.
    """
    if not isinstance(file, str) or not file:
        raise UsageError("no backup file given", hint="Give a backup name (see `backupctl list`) or a path.")
    if is_backup_name(file):
        path = backup_dir / file
        if path.is_file() or not allow_paths:
            if not path.is_file():
                raise NotFoundError(f"no backup named {file} in {backup_dir}",
                                    hint="See `backupctl list`; download it first if it is on S3.")
            return path
    if not allow_paths:
        candidate = Path(file).resolve()
        root = backup_dir.resolve()
        if root not in candidate.parents or not is_backup_name(candidate.name):
            raise UsageError(f"refusing {file!r}: jobs on a worker only read backups in BACKUP_DIR by name",
                             hint="Pass the backup's name, e.g. backup_20251101_123456.backup.gz.")
        path = candidate
    else:
        path = Path(file)
    if not path.is_file():
        raise NotFoundError(f"backup file not found: {file}",
                            hint=f"Give a path, or a name from `backupctl list` (looked up in {backup_dir}).")
    return path


def _target(db: Database, database_url: str | None) -> dict[str, str]:
    target = dsn.parse(_url(db, database_url))  # name and host only: never the string, which may hold a password
    return {"target_database": target.name, "target_host": target.host}


@job("create")
def create(*, progress: ProgressFn, db: Database, output_dir: str | None = None, database_url: str | None = None,
           upload: bool = False, jobs: int | None = None, to: str = "local",
           runner_factory: Callable[[int, PartStore], PartRunner] | None = None) -> dict[str, Any]:
    """A backup into the database's BACKUP_DIR (`to` "local") or straight into its S3 prefix ("s3": no local copy
    at all); with jobs > 1 (default BACKUP_JOBS) written in parts at once, by the runner `runner_factory(jobs,
    store)` makes (a Celery task passes its workers') or by a pool of local processes. The coordinator holds the
    shared job lock for all the parts."""
    settings = db.settings
    destination, store = _destination(to, Path(output_dir) if output_dir else settings.BACKUP_DIR, db)
    count = jobs or settings.BACKUP_JOBS
    url, options = _url(db, database_url), engine_options(settings)
    with database_lock(url, SHARED, "create"):
        if count > 1:
            from ..core.parallel import ProcessRunner, run_parallel_backup

            runner = (runner_factory(count, store) if runner_factory
                      else ProcessRunner(count, store, secrets.token_hex(6)))
            result = run_parallel_backup(database_url=url, runner=runner, progress=progress, options=options,
                                         destination=destination)
        else:
            result = core.run_backup(database_url=url, progress=progress, options=options, destination=destination)
    uploaded = None
    if upload and to != "s3":  # after the lock: a restore need not wait for the upload
        from .storage import upload as upload_job

        uploaded = upload_job(file=result.path, progress=progress, db=db)
    return CreateJobResult.model_validate({**result.model_dump(), "upload": uploaded}).model_dump(mode="json")


def _destination(to: str, directory: Path, db: Database) -> tuple[Destination, PartStore]:
    from ..core.destination import LocalDestination, LocalPartStore, S3Destination, S3PartStore

    if to == "local":
        return LocalDestination(directory), LocalPartStore(directory)
    if to == "s3":
        from ..storage.factory import s3_storage

        storage = s3_storage(db.settings)
        return S3Destination(storage), S3PartStore(storage)
    raise UsageError(f"unknown destination {to!r}", hint="Use --to local or --to s3.")


@job("diff")
def diff(*, progress: ProgressFn, db: Database, file: str, database_url: str | None = None, detailed: bool = True,
         tables: list[str] | None = None, allow_paths: bool = True) -> dict[str, Any]:
    path = resolve_backup_file(file, db.settings.BACKUP_DIR, allow_paths=allow_paths)
    url = _url(db, database_url)
    with database_lock(url, SHARED, "diff"):
        summary = core.calculate_diff(path, database_url=url, detailed=detailed, progress=progress,
                                      tables=tables, options=engine_options(db.settings))
    return DiffJobResult.model_validate({**summary.model_dump(), **_target(db, database_url), "file": str(path)}
                                        ).model_dump(mode="json")


def restore_file(path: str, *, progress: ProgressFn, db: Database, database_url: str | None = None,
                 dry_run: bool = False,
                 tables: list[str] | None = None, show_diff: bool = True, refresh_views: bool = True,
                 large_objects: bool | None = None, job_name: str = "restore",
                 source: dict[str, Any] | None = None) -> dict[str, Any]:
    """Restore (or dry-run) a local file under the database's job lock: exclusive, shared for a dry run."""
    options = engine_options(db.settings).with_(refresh_views=refresh_views)
    url = _url(db, database_url)
    with database_lock(url, SHARED if dry_run else EXCLUSIVE, job_name) as lock:
        result = core.restore_backup(Path(path), show_diff=show_diff, database_url=url, dry_run=dry_run,
                                     tables=tables, progress=progress, options=options, large_objects=large_objects,
                                     before_commit=lock.check)
    out = {**result.model_dump(), **_target(db, database_url), "file": str(path), "source": source}
    return RestoreJobResult.model_validate(out).model_dump(mode="json")


@job("restore")
def restore(*, progress: ProgressFn, db: Database, file: str, database_url: str | None = None, dry_run: bool = False,
            tables: list[str] | None = None, show_diff: bool = True, allow_paths: bool = True,
            refresh_views: bool = True, large_objects: bool | None = None) -> dict[str, Any]:
    path = resolve_backup_file(file, db.settings.BACKUP_DIR, allow_paths=allow_paths)
    return restore_file(str(path), progress=progress, db=db, database_url=database_url, dry_run=dry_run, tables=tables,
                        show_diff=show_diff, refresh_views=refresh_views, large_objects=large_objects)


def verify_file(path: str, *, progress: ProgressFn, db: Database, source: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    result = core.verify_backup(Path(path), progress=progress, options=engine_options(db.settings))
    return VerifyJobResult.model_validate({**result.model_dump(), "file": path, "source": source}
                                          ).model_dump(mode="json")


@job("verify")
def verify(*, progress: ProgressFn, db: Database, file: str, allow_paths: bool = True) -> dict[str, Any]:
    path = resolve_backup_file(file, db.settings.BACKUP_DIR, allow_paths=allow_paths)
    return verify_file(str(path), progress=progress, db=db)
