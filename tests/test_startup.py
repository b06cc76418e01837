"""What a command loads before it works: `backupctl create` imports the backup and nothing it does not run.

Start-up is most of a small backup's time (issue 14: a database of 1,000 small tables against pg_dump -Fc), so
the imports a backup does not need stay out of its process: the diff, the restore, the drill, the parallel
backup, S3, Celery, rich, pydantic-settings (asyncio).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import run_sql

NOT_FOR_A_BACKUP = ("celery", "kombu", "boto3", "botocore", "rich", "pydantic_settings", "asyncio", "apprise",
                    "backup_tasks.core.diff", "backup_tasks.core.restore", "backup_tasks.core.drill",
                    "backup_tasks.core.parallel", "backup_tasks.pg.restore_tx", "backup_tasks.jobs.drill",
                    "backup_tasks.jobs.storage", "backup_tasks.storage.s3")


def test_every_job_is_registered_by_the_module_its_home_names() -> None:
    from backup_tasks import jobs

    jobs._load()
    assert set(jobs.HOMES) == set(jobs.JOBS)
    for name, fn in jobs.JOBS.items():
        assert fn.__module__ == f"backup_tasks.jobs.{jobs.HOMES[name]}", name


def test_a_local_backup_loads_only_the_backup(make_db, backup_dir: Path) -> None:
    _, url = make_db()
    run_sql(url, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a');")
    code = ("import sys, atexit\n"
            "atexit.register(lambda: print('MODULES', ' '.join(sorted(sys.modules)), file=sys.stderr))\n"
            "from backup_tasks.cli import main\nsys.argv = ['backupctl', 'create', '--local']\nmain()\n")
    env = {**os.environ, "DATABASE_URL": url, "BACKUP_DIR": str(backup_dir)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert list(backup_dir.glob("*.backup.gz")), done.stdout
    loaded = set(next(line for line in done.stderr.splitlines() if line.startswith("MODULES")).split()[1:])
    assert "backup_tasks.core.backup" in loaded and "psycopg2" in loaded, "the probe saw no backup"
    assert not loaded & set(NOT_FOR_A_BACKUP), sorted(loaded & set(NOT_FOR_A_BACKUP))


def _models() -> list[type]:
    """Every pydantic model of backup_tasks (each derives from record.Record), its modules imported."""
    import importlib
    import pkgutil

    import backup_tasks
    from backup_tasks.record import Record

    for info in pkgutil.walk_packages(backup_tasks.__path__, "backup_tasks."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    found, todo = [], [Record]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.append(sub)
            todo.append(sub)
    return found


def test_models_build_when_used_and_every_one_builds() -> None:
    """record.Record defers each model's validator to its first use (a command used to build all ~40 at import).
    A model that cannot be built would then fail only when used: every one is built here."""
    probe = ("import backup_tasks.jobs.results as r, backup_tasks.models as m\n"
             "print(m.BackupResult.__pydantic_complete__, r.CleanupJobResult.__pydantic_complete__)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", "False"], done.stdout + done.stderr  # not built by the import
    models = _models()
    assert len(models) >= 35, [m.__name__ for m in models]
    for model in models:
        assert model.model_rebuild(force=True) is not False, model.__name__
        assert model.__pydantic_complete__, model.__name__
