"""The reference: pg_dump and pg_restore, as a user of them runs them (whole processes, from the shell)."""

from __future__ import annotations

import shutil
from pathlib import Path

from .context import DatasetRun
from .measure import Command

RESTORE_FLAGS = ("--data-only", "--single-transaction", "--disable-triggers")


def dump_path(run: DatasetRun, key: str) -> Path:
    return run.dir / f"{key}.dump"


def dump(run: DatasetRun, key: str, *flags: str) -> Command:
    """pg_dump --data-only with the given format flags, to a file (or directory, for -Fd) named after key."""
    return Command(["pg_dump", *flags, "--data-only", "-f", str(dump_path(run, key)), run.ds.db], run.pg.env)


def remove_output(run: DatasetRun, key: str) -> None:
    """Before a dump: the previous one's output (pg_dump -Fd refuses an existing directory)."""
    path = dump_path(run, key)
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def output_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def truncate_and_restore(run: DatasetRun, dump_key: str = "pg_dump_fc") -> Command:
    """TRUNCATE every table, then pg_restore --data-only -1, in one measured shell command: pg_restore
    --data-only needs an empty target and our restore empties its own, so both pay for the emptying."""
    script = 'psql -X -q -v ON_ERROR_STOP=1 -d "$1" -c "$2" && exec pg_restore ' + " ".join(RESTORE_FLAGS) + \
             ' -d "$1" "$3"'
    truncate = run.pg.truncate_sql(run.ds.target)
    return Command(["sh", "-c", script, "sh", run.ds.target, truncate, str(dump_path(run, dump_key))], run.pg.env)
