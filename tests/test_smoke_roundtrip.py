from pathlib import Path

from backup_tasks.core import create_backup, restore_backup
from tests.conftest import run_sql
from tests.oracle import assert_same, snapshot


def test_roundtrip_after_changes(make_db, backup_dir):
    _, url = make_db()
    run_sql(url, """
        CREATE TABLE users (id serial PRIMARY KEY, name text, note text);
        INSERT INTO users (name, note) SELECT 'u' || i, CASE WHEN i % 2 = 0 THEN '' END FROM generate_series(1, 500) i;
    """)
    before = snapshot(url)
    path = create_backup(backup_dir, database_url=url)
    run_sql(url, "DELETE FROM users WHERE id < 100; UPDATE users SET name = 'x';"
                 "INSERT INTO users (name) VALUES ('new');")
    assert snapshot(url) != before
    result = restore_backup(Path(path), database_url=url)
    assert result.success and result.restored_rows == 500
    assert_same(before, snapshot(url))


def test_stale_partial_files_are_swept_and_fresh_ones_kept(make_db, backup_dir):
    import os
    import time

    _, url = make_db()
    stale = backup_dir / ".backup_20200101_000000.backup.gz.tmp-1-abcd"
    fresh = backup_dir / ".backup_20200101_000001.backup.gz.tmp-2-abcd"
    for p in (stale, fresh):
        p.write_bytes(b"partial")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    create_backup(backup_dir, database_url=url)
    assert not stale.exists() and fresh.exists()
