"""S3 through the worker (moto's S3 server over HTTP): the scheduled backup uploads what it made, and
`backupctl list-s3` / `restore-s3` / `check --target s3` run on the worker without --local."""

from __future__ import annotations

import uuid

import pytest

from backup_tasks.cli.dispatch import follow, outcome
from tests.celery_worker import *  # noqa: F403
from tests.celery_worker import ROOT, Worker, backupctl
from tests.conftest import run_sql
from tests.oracle import assert_same, snapshot
from tests.s3_server import worker_s3_env
from tests.terminal import on_terminal

pytest_plugins = ["tests.s3_server"]
pytestmark = [pytest.mark.celery, pytest.mark.s3]


def test_scheduled_backup_uploads_and_restore_s3_round_trips_on_the_worker(celery_env, s3_endpoint, s3_client,
                                                                          client_app, tmp_path, make_db):
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    celery_env.env.update(worker_s3_env(s3_endpoint, bucket, tmp_path))
    run_sql(celery_env.db_url, "CREATE TABLE t (id serial PRIMARY KEY, v text);"
                               "INSERT INTO t (v) SELECT md5(i::text) FROM generate_series(1, 5000) i;")
    before = snapshot(celery_env.db_url)
    worker = Worker(celery_env.env, tmp_path / "worker.log").wait_ready()
    try:
        task = client_app.signature("backup_tasks.scheduled_backup", kwargs={"slot": "2025-11-05T02:00Z"})
        task_id = task.apply_async().id
        result = outcome(follow(client_app, task_id, timeout_s=60), task_id)
        name = result["create"]["name"]
        assert result["upload"]["name"] == name and result["upload"]["url"] == f"s3://{bucket}/backups/{name}"
        assert set(result["cleanup"]["locations"]) == {"local", "s3"}

        listed = backupctl(celery_env, "list-s3")
        assert listed.returncode == 0 and name in listed.stdout, listed.stderr
        assert backupctl(celery_env, "check", "--target", "s3").returncode == 0

        run_sql(celery_env.db_url, "DELETE FROM t WHERE id > 100;")
        restored = backupctl(celery_env, "restore-s3", name, "--yes")
        assert restored.returncode == 0, restored.stderr
        assert f"s3://{bucket}/backups/{name}" in restored.stdout and "Restore completed" in restored.stdout
        assert_same(before, snapshot(celery_env.db_url))
        assert "Task backup_tasks.restore_s3[" in worker.output()

        # Issue 13.4: on a terminal the question names the database the worker restores into, not the one of
        # this shell's own DATABASE_URL (which the note says is not used); answered no, nothing changes.
        run_sql(celery_env.db_url, "DELETE FROM t WHERE id > 4000;")
        changed = snapshot(celery_env.db_url)
        other_name, other_url = make_db()
        code, output = on_terminal(["restore-s3", name], {**celery_env.env, "DATABASE_URL": other_url}, "n",
                                   cwd=str(ROOT))
        assert code == 10, output
        assert f"Restore into database {celery_env.db_name} on localhost? This replaces its data." in output
        assert other_name not in output.split("Note:", 1)[0] and f"database {other_name} on " in output
        assert "t: 4000 → 5000 (+1000)" in output and f"s3://{bucket}/backups/{name}" in output
        assert_same(changed, snapshot(celery_env.db_url))
    finally:
        worker.stop()
