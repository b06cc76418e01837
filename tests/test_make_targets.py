"""The seed's make targets, run as a user runs them, against a throwaway database (LOCAL=1: in-process)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_sql
from tests.oracle import assert_same, snapshot

ROOT = Path(__file__).resolve().parent.parent


def make(target: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", target, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


@pytest.fixture
def make_env(make_db, backup_dir):
    _, url = make_db()
    run_sql(url, """
        CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
        INSERT INTO alembic_version VALUES ('0aa2828fc065');
        CREATE TABLE users (id serial PRIMARY KEY, name text);
        INSERT INTO users (name) SELECT 'u' || i FROM generate_series(1, 100) i;
    """)
    env = {**os.environ, "DATABASE_URL": url, "BACKUP_DIR": str(backup_dir), "LOCAL": "1"}
    return url, env, backup_dir


@pytest.mark.slow  # every seed target through make, each a fresh interpreter
def test_seed_targets_with_bare_names_and_paths(make_env):
    url, env, backup_dir = make_env
    created = make("db:backup:oneshot", env)
    assert created.returncode == 0, created.stderr
    assert "Migration version: 0aa2828fc065" in created.stdout and "- users: 100 rows" in created.stdout
    (path,) = backup_dir.glob("backup_*.backup.gz")
    listed = make("db:backup:list", env)
    assert listed.returncode == 0 and path.name in listed.stdout

    before = snapshot(url)
    run_sql(url, "DELETE FROM users WHERE id <= 10; UPDATE alembic_version SET version_num = 'next'")
    for file in (path.name, str(path)):  # FILE= as a bare name and as a path, as in the seed
        diff = make("db:backup:diff", env, f"FILE={file}")
        assert diff.returncode == 0, diff.stderr
        assert "users: 90 → 100 (+10)  [insert 10]" in diff.stdout
        dry = make("db:backup:restore:dry-run", env, f"FILE={file}")
        assert dry.returncode == 0 and "Dry run: nothing was changed." in dry.stdout

    refused = make("db:backup:restore", env, f"FILE={path.name}")  # no terminal, no YES=1
    assert refused.returncode != 0 and "Pass --yes" in refused.stderr
    restored = make("db:backup:restore", env, f"FILE={path.name}", "YES=1")
    assert restored.returncode == 0, restored.stderr
    assert "Adjusting migration version: next → 0aa2828fc065" in restored.stdout
    assert_same(before, snapshot(url))


@pytest.mark.parametrize("target", ["db:backup:diff", "db:backup:restore", "db:backup:restore:dry-run",
                                    "db:backup:upload", "db:backup:download", "db:backup:restore:s3",
                                    "db:backup:restore:s3:dry-run"])
def test_missing_file_gives_a_one_line_usage(make_env, target):
    _, env, _ = make_env
    result = make(target, env)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[0] == (
        f"usage: make {target} FILE=backup_YYYYMMDD_HHMMSS.backup.gz (a name in BACKUP_DIR or a path)")
