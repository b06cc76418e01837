"""Issue 13 items 5 and 6: a restore leaves the database consistent — materialized views over the restored tables
refreshed (in dependency order, in the same transaction), and a restore that fails on a deferred constraint moves
no sequence (setval is not transactional)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from backup_tasks.core import create_backup, restore_backup
from backup_tasks.core.options import EngineOptions
from backup_tasks.errors import RestoreError
from tests.conftest import query, run_sql
from tests.oracle import assert_same, snapshot

VIEWS = """
CREATE TABLE customers (id int PRIMARY KEY, region text NOT NULL);
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers, amount numeric NOT NULL);
INSERT INTO customers SELECT i, CASE WHEN i % 2 = 0 THEN 'north' ELSE 'south' END FROM generate_series(1, 20) i;
INSERT INTO orders (customer_id, amount) SELECT 1 + i % 20, i FROM generate_series(1, 200) i;
CREATE VIEW order_regions AS SELECT o.amount, c.region FROM orders o JOIN customers c ON c.id = o.customer_id;
CREATE MATERIALIZED VIEW region_totals AS SELECT region, sum(amount) AS total, count(*) AS n
    FROM order_regions GROUP BY region;
CREATE MATERIALIZED VIEW grand_total AS SELECT sum(total) AS total FROM region_totals;
CREATE MATERIALIZED VIEW never_filled AS SELECT count(*) FROM orders WITH NO DATA;
CREATE TABLE unrelated (id int);
CREATE MATERIALIZED VIEW unrelated_count AS SELECT count(*) AS n FROM unrelated;
"""


def totals(url: str) -> tuple:
    return (query(url, "SELECT region, total, n FROM region_totals ORDER BY 1"),
            query(url, "SELECT total FROM grand_total"))


@pytest.fixture
def shop(make_db) -> str:
    _, url = make_db()
    run_sql(url, VIEWS)
    return url


def test_materialized_views_over_restored_tables_are_refreshed_in_dependency_order(shop, backup_dir):
    expected = totals(shop)
    path = create_backup(backup_dir, database_url=shop)
    run_sql(shop, "DELETE FROM orders WHERE id > 100; UPDATE orders SET amount = 0 WHERE id < 10;"
                  "REFRESH MATERIALIZED VIEW region_totals; REFRESH MATERIALIZED VIEW grand_total;"
                  "INSERT INTO unrelated VALUES (1)")
    assert totals(shop) != expected
    # In dependency order: unrelated_count reads a table; region_totals a view over two; grand_total reads
    # region_totals. never_filled was never populated and stays so.
    order = ["unrelated_count", "region_totals", "grand_total"]
    dry = restore_backup(Path(path), database_url=shop, dry_run=True)
    assert dry.views_refreshed == order  # listed; the dry run refreshes nothing
    assert totals(shop) != expected

    result = restore_backup(Path(path), database_url=shop)  # the shipped default: refresh
    assert result.views_refreshed == order
    assert totals(shop) == expected
    assert query(shop, "SELECT n FROM unrelated_count") == [(0,)]  # `unrelated` is empty again, as backed up
    assert "views" in result.phase_s
    assert query(shop, "SELECT relispopulated FROM pg_class WHERE relname = 'never_filled'") == [(False,)]


def test_no_refresh_views_leaves_them_as_they_were(shop, backup_dir):
    path = create_backup(backup_dir, database_url=shop)
    run_sql(shop, "DELETE FROM orders; REFRESH MATERIALIZED VIEW region_totals")
    stale = totals(shop)
    result = restore_backup(Path(path), database_url=shop, options=EngineOptions(refresh_views=False))
    assert result.views_refreshed == [] and totals(shop) == stale


def test_views_this_role_may_not_refresh_are_reported(owner_role, shop, backup_dir):
    run_sql(shop, f'ALTER MATERIALIZED VIEW grand_total OWNER TO "{owner_role}"')
    path = create_backup(backup_dir, database_url=shop)
    role_url = shop.replace("postgres@", f"{owner_role}@", 1)
    run_sql(shop, f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{owner_role}";'
                  f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{owner_role}";'
                  f'ALTER TABLE customers OWNER TO "{owner_role}"; ALTER TABLE orders OWNER TO "{owner_role}";'
                  f'ALTER TABLE unrelated OWNER TO "{owner_role}"')
    result = restore_backup(Path(path), database_url=role_url)
    assert result.views_refreshed == ["grand_total"]
    assert result.views_not_refreshed == ["unrelated_count", "region_totals"]


def test_a_deferred_constraint_that_fails_moves_no_sequence(make_db, backup_dir, tmp_path):
    """A DEFERRABLE INITIALLY DEFERRED key on a table that keeps its indexes (below the rebuild threshold) is
    checked at COMMIT, which came after setval: the restore failed and the sequences had moved anyway."""
    _, url = make_db()
    run_sql(url, """
        CREATE TABLE tickets (id serial PRIMARY KEY, code text,
                              CONSTRAINT tickets_code_key UNIQUE (code) DEFERRABLE INITIALLY DEFERRED);
        INSERT INTO tickets (code) SELECT 'c' || i FROM generate_series(1, 50) i;
    """)
    path = Path(create_backup(backup_dir, database_url=url))
    run_sql(url, "SELECT setval('tickets_id_seq', 5000)")
    before = snapshot(url)
    text = gzip.decompress(path.read_bytes())
    assert b'"c2"' in text
    bad = tmp_path / "backup_20240101_000000.backup.gz"
    bad.write_bytes(gzip.compress(text.replace(b'"c2"', b'"c1"', 1)))  # two rows with code c1

    with pytest.raises(RestoreError) as info:
        restore_backup(bad, database_url=url)
    assert "tickets_code_key" in info.value.message
    assert_same(before, snapshot(url))  # the sequence too: still 5000


def test_the_command_line_refreshes_by_default_and_says_so(shop, backup_dir):
    import os
    import subprocess
    import sys

    path = create_backup(backup_dir, database_url=shop)
    run_sql(shop, "DELETE FROM orders; REFRESH MATERIALIZED VIEW region_totals")
    env = {**os.environ, "DATABASE_URL": shop, "BACKUP_DIR": str(backup_dir)}
    backupctl = str(Path(sys.executable).parent / "backupctl")
    stale = totals(shop)
    kept = subprocess.run([backupctl, "restore", Path(path).name, "--yes", "--local", "--no-refresh-views"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert kept.returncode == 0, kept.stderr
    assert totals(shop) == stale and "Refreshed materialized views" not in kept.stdout
    run_sql(shop, "DELETE FROM orders")
    done = subprocess.run([backupctl, "restore", Path(path).name, "--yes", "--local"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Refreshed materialized views: unrelated_count, region_totals, grand_total (" in done.stdout
    assert totals(shop) != stale
