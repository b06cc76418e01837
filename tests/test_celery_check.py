"""`backupctl check --max-age`: exit 11 (STALE) when the newest backup is too old or there is none, so any
monitor can alert on backups that silently stopped; durations like 26h, 90m, 2d."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from backup_tasks.cli.job_commands import format_duration, parse_duration
from backup_tasks.errors import ExitCode
from tests.celery_worker import *  # noqa: F403
from tests.celery_worker import backupctl
from tests.conftest import run_sql


@pytest.mark.parametrize("text, delta", [
    ("26h", timedelta(hours=26)), ("90m", timedelta(minutes=90)), ("2d", timedelta(days=2)),
    ("1d12h", timedelta(days=1, hours=12)), ("45s", timedelta(seconds=45)), ("1w", timedelta(weeks=1)),
    (" 1.5h ", timedelta(minutes=90)), ("2D", timedelta(days=2)),
])
def test_durations(text, delta):
    assert parse_duration(text) == delta


@pytest.mark.parametrize("text", ["", "26", "h", "26x", "-1h", "0h", "1h-", "abc"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_format_duration():
    assert format_duration(timedelta(hours=26, minutes=5)) == "1d2h5m"
    assert format_duration(timedelta(seconds=42)) == "42s"


@pytest.mark.celery
def test_check_through_the_worker_passes_for_a_fresh_backup_and_fails_for_an_old_one(celery_env, worker):
    empty = backupctl(celery_env, "check")
    assert empty.returncode == int(ExitCode.STALE) == 11, empty.stderr
    assert f"Error: no backups found in local ({celery_env.backup_dir})" in empty.stderr
    assert "Hint: Check the worker and Beat" in empty.stderr

    run_sql(celery_env.db_url, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);")
    assert backupctl(celery_env, "create").returncode == 0
    fresh = backupctl(celery_env, "check", "--max-age", "26h")
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.startswith("OK: newest backup backup_") and "(max age 1d2h)" in fresh.stdout

    time.sleep(2.1)
    stale = backupctl(celery_env, "check", "--max-age", "2s", "--target", "local")
    assert stale.returncode == 11, stale.stderr
    assert "older than --max-age 2s" in stale.stderr


def test_check_local_and_its_usage_errors(celery_env):
    assert backupctl(celery_env, "check", "--local").returncode == 11
    bad = backupctl(celery_env, "check", "--max-age", "26", "--local")
    assert bad.returncode == int(ExitCode.USAGE) and "invalid duration '26'" in bad.stderr
    s3 = backupctl(celery_env, "check", "--target", "s3", "--local")  # S3 is not configured here
    assert s3.returncode == int(ExitCode.USAGE) and "S3_BUCKET_NAME" in s3.stderr
