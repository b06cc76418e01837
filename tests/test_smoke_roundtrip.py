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
    run_sql(url, "DELETE FROM users WHERE id < 100; UPDATE users SET name = 'x'; INSERT INTO users (name) VALUES ('new');")
    assert snapshot(url) != before
    result = restore_backup(Path(path), database_url=url)
    assert result.success and result.restored_rows == 500
    assert_same(before, snapshot(url))
