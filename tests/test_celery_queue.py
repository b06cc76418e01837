"""The client never hangs on a dead queue: no worker or no broker is reported within seconds with a hint, and
--local still works without Redis (restoring must be possible when Redis is down)."""

from __future__ import annotations

import subprocess
import time

import pytest

from backup_tasks.errors import ExitCode
from tests.celery_worker import *  # noqa: F403
from tests.celery_worker import BACKUPCTL, ROOT, backupctl, free_port
from tests.conftest import run_sql
from tests.oracle import assert_same, snapshot

pytestmark = pytest.mark.celery


def test_no_worker_is_reported_within_seconds(celery_env):
    started = time.monotonic()
    result = backupctl(celery_env, "create", timeout=30)
    elapsed = time.monotonic() - started
    assert result.returncode == int(ExitCode.QUEUE) == 9, result.stderr
    assert "Error: no Celery worker answered" in result.stderr
    assert "Hint: Start a worker with `make worker`, or use --local" in result.stderr
    assert elapsed < 6, elapsed
    assert not list(celery_env.backup_dir.iterdir())
    assert celery_env.redis().llen("celery") == 0  # nothing was left queued for a worker that may come later


def test_an_unreachable_broker_is_reported_quickly_without_its_password(celery_env):
    dead = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    env = {**celery_env.env, "CELERY_BROKER_URL": dead, "CELERY_RESULT_BACKEND": dead}
    started = time.monotonic()
    for args in (["list"], ["status", "0" * 32]):
        result = _run(env, *args)
        assert result.returncode == int(ExitCode.QUEUE), (args, result.stderr)
        assert "hunter2" not in result.stderr + result.stdout
    assert "cannot reach the broker at redis://:***@127.0.0.1" in _run(env, "list").stderr  # dsn.mask
    assert time.monotonic() - started < 10


def _run(env, *args):
    """backupctl with a different environment than the test's worker."""
    return subprocess.run([BACKUPCTL, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)


def test_local_runs_in_process_when_redis_is_down(celery_env):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    env = {**celery_env.env, "CELERY_BROKER_URL": dead, "CELERY_RESULT_BACKEND": dead}
    run_sql(celery_env.db_url, "CREATE TABLE t (id serial PRIMARY KEY, v text); INSERT INTO t (v) VALUES ('a'), ('b');")
    before = snapshot(celery_env.db_url)
    created = _run(env, "create", "--local")
    assert created.returncode == 0, created.stderr
    name = next(p.name for p in celery_env.backup_dir.glob("*.backup.gz"))
    run_sql(celery_env.db_url, "DELETE FROM t;")
    restored = _run(env, "restore", name, "--yes", "--local")
    assert restored.returncode == 0, restored.stderr
    assert_same(before, snapshot(celery_env.db_url))


def test_a_password_in_database_url_is_not_sent_through_the_broker(celery_env):
    result = backupctl(celery_env, "create", "--database-url", "postgresql://u:s3cret@localhost/app")
    assert result.returncode == int(ExitCode.USAGE)
    assert "is not sent to a worker" in result.stderr and "s3cret" not in result.stderr
    assert celery_env.redis().llen("celery") == 0
