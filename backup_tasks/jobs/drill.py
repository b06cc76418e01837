"""The `drill` job: restore a backup into the scratch database (DRILL_DATABASE_URL), prove it restored exactly
(core/drill.py), and store the report next to the backup (`<backup>.drill.json`, locally or on S3).

Safety first, before anything is read or written: the scratch database must not be the production one (the
database's own URL, DATABASE_URL) nor the database the backup was taken from (its metadata). The job lock is the
scratch database's (exclusive): two drills never share a scratch database, and a drill never holds production's
lock, so backups of production run while a drill runs.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import databases, dsn
from ..archive.reader import read_metadata
from ..core.drill import Prepared, run_drill
from ..databases.model import DEFAULT_NAME
from ..errors import ConfigError, DecryptionError, DrillFailedError, InvalidBackupError, NotFoundError, UsageError
from ..models import DRILL_FAILED, DrillReport
from ..names import sidecar_path
from ..progress import ProgressFn, no_progress
from ..settings import Settings
from ..storage.factory import local_storage, s3_storage
from . import EXCLUSIVE, Database, database_lock, job
from .options import engine_options
from .results import DrillJobResult

SOURCES = ("local", "s3")
PREPARE_OUTPUT_CHARS = 8000  # the tail of DRILL_PREPARE_COMMAND's output kept in the report
SCRATCH_HINT = ("Point DRILL_DATABASE_URL (or --scratch-url) at a scratch database that may be overwritten, "
                "with the application's schema; never the production one.")


def scratch_url_of(db: Database, explicit: str | None) -> str:
    url = explicit or db.config.drill_database_url
    if not url:
        raise ConfigError("DRILL_DATABASE_URL is not set: a drill needs a scratch database to restore into",
                          hint=SCRATCH_HINT)
    return url


def refuse_production(scratch: str, db: Database) -> None:
    """The scratch database may be overwritten: never a database this deployment backs up (same host, port and
    database name, however either URL is written: URL or key=value form, localhost or 127.0.0.1)."""
    target = dsn.parse(scratch)
    deployment = databases.deployment()
    candidates = [(db.name, db.url_variable, db.url), (DEFAULT_NAME, "DATABASE_URL", deployment.settings.database_url)]
    candidates += [(other.name, other.url_variable, other.config.database_url)
                   for other in deployment.databases.values() if not other.url_error]
    for name, variable, url in candidates:
        if url and target.same_database(dsn.parse(url)):
            which = "" if name == DEFAULT_NAME else f" {name}"
            raise ConfigError(f"refusing to drill into {target.describe()}: it is the production database{which} "
                              f"({variable}); nothing was changed", hint=SCRATCH_HINT)


def refuse_backup_source(scratch: str, database_name: str | None, database_host: str | None) -> None:
    """Nor the database the backup came from: its metadata names the database and host (not the port, so a
    scratch database of the same name on the same host is refused on any port)."""
    target = dsn.parse(scratch)
    if not database_name or database_name != target.name:
        return
    local = {"", "localhost", "127.0.0.1", "::1"}
    host = (database_host or "").lower()
    if host == target.host or (host in local and target.host in local):
        raise ConfigError(f"refusing to drill into {target.describe()}: the backup was taken from database "
                          f"{database_name} on {database_host}; nothing was changed", hint=SCRATCH_HINT)


def run_prepare(command: str, scratch: str, timeout_s: float) -> Prepared:
    """DRILL_PREPARE_COMMAND, split like a shell would (no shell runs it), with DATABASE_URL set to the scratch
    database so that e.g. `alembic upgrade head` migrates the scratch database, never production."""
    env = {**os.environ, "DATABASE_URL": scratch}
    started = time.monotonic()
    try:
        done = subprocess.run(shlex.split(command), env=env, capture_output=True, timeout=timeout_s, check=False,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        output = _text(exc.stdout) + _text(exc.stderr)
        return Prepared(False, f"`{command}` did not finish within DRILL_PREPARE_TIMEOUT_S={timeout_s:g}s",
                        _tail(output))
    except (OSError, ValueError) as exc:
        return Prepared(False, f"`{command}` could not be run: {exc}", "")
    output = _text(done.stdout) + _text(done.stderr)
    took = time.monotonic() - started
    if done.returncode != 0:
        return Prepared(False, f"`{command}` exited with {done.returncode} after {took:.1f} s", _tail(output))
    return Prepared(True, f"`{command}` succeeded in {took:.1f} s", _tail(output))


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def _tail(text: str) -> str:
    text = dsn.mask(text)
    return text if len(text) <= PREPARE_OUTPUT_CHARS else "…" + text[-PREPARE_OUTPUT_CHARS:]


def _location(settings: Settings, file: str | None, source: str | None, backup_dir: Path) -> str:
    if source is not None:
        if source not in SOURCES:
            raise UsageError(f"unknown drill source {source!r}", hint="Use --from local or --from s3.")
        return source
    if file is not None:  # a file that is here is drilled here; otherwise the bucket, when there is one
        here = (backup_dir / file).is_file() or Path(file).is_file()
        return "local" if here or not settings.s3_enabled else "s3"
    return "s3" if settings.s3_enabled else "local"


def newest_backup(storage: Any) -> str:
    newest = next((b for b in storage.list() if b.size), None)
    if newest is None:
        raise NotFoundError(f"no backups in {storage.location()} to drill",
                            hint="Create one first (`backupctl create`), or give a backup name.")
    return newest.name


@contextmanager
def _backup_file(db: Database, file: str | None, location: str, allow_paths: bool, progress: ProgressFn
                 ) -> Iterator[tuple[Path, Any, str]]:
    """(the local path of the backup to drill, how to store its report, where the report goes)."""
    from .db import resolve_backup_file
    from .storage import downloaded_to_temp

    config = db.config
    if location == "s3":
        storage = s3_storage(config)
        name = file or newest_backup(storage)
        with downloaded_to_temp(name, progress, db) as (path, _):
            yield path, lambda data: storage.put_sidecar(name, "drill", data), storage.url(name) + ".drill.json"
        return
    name = file or newest_backup(local_storage(config))
    path = resolve_backup_file(name, config.BACKUP_DIR, allow_paths=allow_paths)
    yield path, lambda data: _write_beside(path, data), str(sidecar_path(path, "drill"))


def _write_beside(path: Path, data: bytes) -> None:
    """`<backup>.drill.json` next to a local backup, atomically (temp file + rename)."""
    target = sidecar_path(path, "drill")
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, target)


@job("drill")
def drill(*, db: Database, file: str | None = None, source: str | None = None, scratch_url: str | None = None,
          allow_paths: bool = True, progress: ProgressFn = no_progress) -> dict[str, Any]:
    """Drill a backup (default: the newest; from S3 when it is configured) into the scratch database."""
    settings = db.config
    scratch = scratch_url_of(db, scratch_url)
    refuse_production(scratch, db)  # before anything is downloaded, read or written
    location = _location(settings, file, source, settings.BACKUP_DIR)
    with _backup_file(db, file, location, allow_paths, progress) as (path, store_report, where):
        options = engine_options(settings)
        try:
            meta = read_metadata(path, settings.BACKUP_MAX_LINE_BYTES, options.keys)
        except (InvalidBackupError, DecryptionError):
            pass  # no restore can start from it either: the drill's checksum or restore step reports why
        else:
            refuse_backup_source(scratch, meta.database_name, meta.database_host)
        command = (settings.DRILL_PREPARE_COMMAND or "").strip()
        prepare = (lambda: run_prepare(command, scratch, settings.DRILL_PREPARE_TIMEOUT_S)) if command else None
        with database_lock(scratch, EXCLUSIVE, "drill") as lock:
            run = run_drill(path, scratch_url=scratch, location=location, options=options,
                            prepare=prepare, progress=progress, before_commit=lock.check)
        report = run.report
        store_report(report.model_dump_json(indent=1).encode() + b"\n")
    if run.error is not None:
        raise run.error
    if report.outcome == DRILL_FAILED:
        raise DrillFailedError(failure_message(report, location))
    return DrillJobResult(**report.model_dump(), report=where).model_dump(mode="json")


def failure_message(report: DrillReport, location: str) -> str:
    failed = next((c for c in report.checks if c.ok is False), None)
    what = f"{failed.name}: {failed.detail}" if failed else (report.error or "failed")
    names = failed.failures[:5] if failed else []
    more = f" ({'; '.join(names)}{' …' if failed and len(failed.failures) > 5 else ''})" if names else ""
    return (f"drill of {report.backup} ({location}) FAILED at {what}{more}; report: "
            f"{report.backup}.drill.json next to the backup")
