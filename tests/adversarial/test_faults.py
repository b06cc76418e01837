"""Faults under real processes: the PostgreSQL connection terminated (pg_terminate_backend, from another
connection) in the middle of a backup and of a restore, and the disk filling up while a backup is written
(RLIMIT_FSIZE in the `backupctl` process, SIGXFSZ ignored so the write fails with EFBIG as on a full disk).

Each: a clear `Error:` and non-zero exit through the CLI, no traceback; a backup leaves nothing in BACKUP_DIR
(no backup_*.backup.gz, no temp file, no sidecar), a restore leaves the database oracle-equal to before.
"""

from __future__ import annotations

import os
import resource
import signal
from pathlib import Path

import psycopg2
import pytest

from backup_tasks.core import create_backup
from tests.conftest import query, wait_for
from tests.oracle import assert_same, snapshot

from .support import assert_clean_error, assert_ok, cli, cli_env, cli_start, drop_database, new_database, run_sql

pytestmark = pytest.mark.adversarial

ROWS = 300_000


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A database with a 300k-row table (~45 MB of JSON: a backup or restore takes long enough to be hit in the
    middle) and a small keyed table, plus a backup of it."""
    name, url = new_database(seed=False)
    run_sql(url, f"""
        CREATE TABLE big (id int, a text, b text, c numeric);
        INSERT INTO big SELECT i, md5(i::text), repeat(md5(i::text), 3), i * 1.1 FROM generate_series(1, {ROWS}) i;
        CREATE TABLE small (id serial PRIMARY KEY, v text);
        INSERT INTO small (v) SELECT 'v' || i FROM generate_series(1, 50) i;
        ANALYZE;
    """)
    path = create_backup(tmp_path_factory.mktemp("big"), database_url=url)
    try:
        yield name, url, path
    finally:
        drop_database(name)


def terminate(dbname: str, where: str) -> list[int]:
    """pg_terminate_backend() on this tool's sessions in `dbname` that match `where`, from a separate connection."""
    rows = query(os.environ.get("TEST_ADMIN_DATABASE_URL", "postgresql://postgres@localhost:5432/postgres"),
                 "SELECT a.pid, pg_terminate_backend(a.pid) FROM pg_stat_activity a "
                 f"WHERE a.datname = %s AND a.application_name = 'backup_tasks' AND ({where})", (dbname,))
    return [pid for pid, ok in rows if ok]


def test_connection_terminated_mid_backup_fails_clearly_and_leaves_no_file(big, tmp_path):
    name, url, _ = big
    out = tmp_path / "backups"
    out.mkdir()
    proc = cli_start("create", "--local", "--database-url", url, env=cli_env(BACKUP_DIR=str(out)))

    def writing() -> Path | None:  # the temp file exists and holds part of the rows: we are in the middle
        temps = [p for p in out.iterdir() if ".tmp-" in p.name]
        return temps[0] if temps and temps[0].stat().st_size > 256 * 1024 else None

    # Polled every 3 ms: the moment to catch is mid-backup.
    wait_for(writing, 30.0, interval=0.003, what="the backup to start writing")
    killed = terminate(name, "true")
    stdout, stderr = proc.communicate(timeout=60)

    assert killed, "no backup session to terminate (the backup finished first?)"
    line = assert_clean_error(proc_result(proc, stdout, stderr), 6)
    assert "terminat" in line or "connection" in line, line
    assert "Saved to" not in stdout
    assert sorted(p.name for p in out.iterdir()) == []  # no backup, no temp file, no sidecar


def test_connection_terminated_mid_restore_rolls_back(big, tmp_path):
    name, url, path = big
    run_sql(url, "DELETE FROM big WHERE id % 10 = 0; UPDATE big SET a = 'changed' WHERE id < 1000; "
                 "DELETE FROM small WHERE id > 40; INSERT INTO small (v) VALUES ('new')")
    before = snapshot(url)
    proc = cli_start("restore", str(path), "--local", "--yes", "--database-url", url)

    def copying() -> int | None:  # the restore's COPY into `big` has loaded part of the rows
        rows = query(url, "SELECT p.tuples_processed FROM pg_stat_progress_copy p "
                          "JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'backup_tasks' "
                          "AND p.relid = 'big'::regclass AND p.tuples_processed > 20000")
        return rows[0][0] if rows else None

    loaded = wait_for(copying, 30.0, interval=0.003, what="the restore's COPY into big")
    killed = terminate(name, "a.query ILIKE 'COPY%%big%%'")
    stdout, stderr = proc.communicate(timeout=60)

    assert killed and loaded < ROWS
    line = assert_clean_error(proc_result(proc, stdout, stderr), 6)
    assert "terminat" in line or "connection" in line, line
    assert "Restore completed" not in stdout
    assert_same(before, snapshot(url))  # the transaction was rolled back: nothing half-done

    # Not retried behind the user's back, and a new restore simply works.
    assert_ok(cli("restore", str(path), "--local", "--yes", "--database-url", url))
    assert query(url, "SELECT count(*) FROM big") == [(ROWS,)]


def proc_result(proc, stdout: str, stderr: str):
    import subprocess

    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write(), as on a full disk, not a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.parametrize("limit", [0, 4096, 1 << 20])
def test_disk_full_while_writing_a_backup(big, tmp_path, limit):
    _, url, _ = big
    out = tmp_path / "backups"
    out.mkdir()
    (out / "keep.txt").write_text("unrelated file")

    proc = cli("create", "--local", "--database-url", url, env=cli_env(BACKUP_DIR=str(out)),
               preexec_fn=_file_size_limit(limit))

    line = assert_clean_error(proc, 7)
    assert "no space left" in line, line
    assert "no partial file" in proc.stderr.splitlines()[1]
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_disk_full_is_not_sticky(big, tmp_path):
    """Positive control for the limit: the same command without it writes the backup."""
    _, url, _ = big
    out = tmp_path / "backups"
    out.mkdir()
    proc = cli("create", "--local", "--database-url", url, env=cli_env(BACKUP_DIR=str(out)),
               preexec_fn=_file_size_limit(resource.RLIM_INFINITY))
    assert_ok(proc)
    assert len([p for p in out.iterdir() if p.name.endswith(".backup.gz")]) == 1


def test_terminated_sessions_do_not_leak_into_later_use(big):
    """After the faults above, the database is still usable (no stuck locks or prepared transactions)."""
    _, url, _ = big
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = '2s'; LOCK TABLE big IN ACCESS EXCLUSIVE MODE")
    finally:
        conn.rollback()
        conn.close()
