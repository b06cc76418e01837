"""Issue 16: drills through a real worker and a real Beat (Redis broker, `./worker` processes, moto S3 over HTTP).

A drill from the queue drills the newest backup from S3 and uploads its report beside the object; a failed drill
is a failed job (ERROR in the worker's log, a message to BACKUP_NOTIFY_URLS); the scheduled drill runs once per
BACKUP_DRILL_CRON slot, and its lock is the scratch database's: a backup of production runs during a drill.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import psycopg2
import pytest

from backup_tasks import dsn
from backup_tasks.cli.dispatch import follow, outcome
from backup_tasks.pg.joblock import holders
from tests.celery_worker import *  # noqa: F403 - the fixtures
from tests.celery_worker import VENV_BIN, Worker, backupctl, wait_for
from tests.conftest import run_sql
from tests.oracle import assert_same, snapshot
from tests.s3_server import worker_s3_env
from tests.test_fleet import Receiver

pytest_plugins = ["tests.s3_server"]
pytestmark = [pytest.mark.celery]

SCHEMA = "CREATE TABLE t (id serial PRIMARY KEY, v text, n numeric(8,2));"
DATA = "INSERT INTO t (v, n) SELECT md5(i::text), i / 4.0 FROM generate_series(1, 5000) i;"


@pytest.fixture
def drill_env(celery_env, make_db):
    """The worker's environment with a scratch database (schema only) as DRILL_DATABASE_URL."""
    _, scratch = make_db()
    run_sql(celery_env.db_url, SCHEMA + DATA)
    run_sql(scratch, SCHEMA)
    celery_env.env["DRILL_DATABASE_URL"] = scratch
    return celery_env, scratch


def result_of(app, task_id: str, timeout_s: float = 120) -> dict:
    return outcome(follow(app, task_id, timeout_s=timeout_s), task_id)


@pytest.mark.s3
def test_a_drill_through_the_worker_from_s3_uploads_its_report_beside_the_object(drill_env, s3_endpoint, s3_client,
                                                                                  tmp_path):
    celery_env, scratch = drill_env
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    celery_env.env.update(worker_s3_env(s3_endpoint, bucket, tmp_path))
    worker = Worker(celery_env.env, tmp_path / "worker.log").wait_ready()
    try:
        created = backupctl(celery_env, "create", "--upload")
        assert created.returncode == 0, created.stderr
        name = next(p.name for p in celery_env.backup_dir.glob("*.backup.gz"))
        (celery_env.backup_dir / name).unlink()  # only the bucket has it now: the drill downloads it
        done = backupctl(celery_env, "drill")
        assert done.returncode == 0, done.stderr
        assert f"Drill of {name} (s3) into database {dsn.parse(scratch).name} on localhost:5432: OK" in done.stdout
        assert f"Report: s3://{bucket}/backups/{name}.drill.json" in done.stdout
        report = json.loads(s3_client.get_object(Bucket=bucket, Key=f"backups/{name}.drill.json")["Body"].read())
        assert report["ok"] is True and report["location"] == "s3" and report["rows"] == 5000
        assert_same(snapshot(celery_env.db_url), snapshot(scratch))
        listing = backupctl(celery_env, "list-s3")
        assert listing.returncode == 0, listing.stderr
        line = next(x for x in listing.stdout.splitlines() if name in x)
        assert f" ok {report['finished_at'][:10]} {report['finished_at'][11:16]}" in line
        check = backupctl(celery_env, "check", "--max-drill-age", "8d", "--target", "s3")
        assert check.returncode == 0 and "newest successful drill" in check.stdout
        assert not list(celery_env.backup_dir.glob("*.backup.gz"))  # the temp download is gone
    finally:
        worker.stop()


def test_a_failed_drill_is_a_failed_job_logged_at_error_and_notified(drill_env, tmp_path):
    celery_env, scratch = drill_env
    receiver = Receiver()
    celery_env.env["BACKUP_NOTIFY_URLS"] = receiver.url("failure")
    run_sql(scratch, "ALTER TABLE t DROP COLUMN n")  # schema drift in the scratch database
    worker = Worker(celery_env.env, tmp_path / "worker.log").wait_ready()
    try:
        assert backupctl(celery_env, "create").returncode == 0
        done = backupctl(celery_env, "drill")
        assert done.returncode == 14, done.stderr
        assert "FAILED at schema: schema drift: 1 mismatch (column t.n is in the backup but not in the database)" \
            in done.stderr
        wait_for(lambda: receiver.messages("failure"), 30, what="the failure notification")
        message = receiver.messages("failure")[0]
        assert "drill" in message["title"] and "FAILED" in message["title"]
        assert "column t.n is in the backup but not in the database" in message["message"]
        log = worker.output()
        assert "ERROR" in log and "job drill failed" in log
    finally:
        worker.stop()
        receiver.close()


def test_the_scheduled_drill_runs_once_per_slot_and_never_takes_productions_lock(drill_env, worker, client_app):
    celery_env, scratch = drill_env
    assert backupctl(celery_env, "create").returncode == 0
    slot = "2025-11-09T04:00Z"
    ids = [client_app.signature("backup_tasks.scheduled_drill", kwargs={"slot": slot}).apply_async().id
           for _ in range(2)]
    results = [result_of(client_app, i) for i in ids]
    assert sorted(r["skipped"] for r in results) == [False, True]
    made = next(r for r in results if not r["skipped"])
    assert made["drill"]["outcome"] == "ok" and made["slot"] == slot
    # During a drill the lock held is the scratch database's, never production's: a backup runs meanwhile. A
    # reader of the scratch table keeps the drill's TRUNCATE waiting, so the drill is surely still running.
    blocker = psycopg2.connect(scratch)
    try:
        blocker.cursor().execute("LOCK TABLE t IN ACCESS SHARE MODE")
        running = client_app.signature("backup_tasks.drill", kwargs={}).apply_async().id
        wait_for(lambda: holders(scratch), 60, interval=0.05, what="the drill to hold the scratch database's lock")
        assert holders(celery_env.db_url) == []
        created = backupctl(celery_env, "create")
        assert created.returncode == 0, created.stderr
        assert holders(scratch), "the drill ended before the backup: the test proved nothing"
        # A second drill on the same scratch database is refused while the first runs (exit 8, busy).
        second = backupctl(celery_env, "drill")
        assert second.returncode == 8 and "drill" in second.stderr, second.stderr
    finally:
        blocker.rollback()
        blocker.close()
    assert result_of(client_app, running)["outcome"] == "ok"


@pytest.mark.slow
def test_beat_with_a_drill_cron_drills_the_newest_backup(drill_env, tmp_path):
    celery_env, _scratch = drill_env
    env = {**celery_env.env, "BACKUP_DRILL_CRON": "* * * * *", "BACKUP_CRON": "0 0 1 1 *"}
    worker = Worker(env, tmp_path / "worker.log").wait_ready()
    beat_log = open(tmp_path / "beat.log", "wb")
    beat = None
    try:
        assert backupctl(celery_env, "create").returncode == 0
        name = next(p.name for p in celery_env.backup_dir.glob("*.backup.gz"))
        beat = subprocess.Popen([str(VENV_BIN / "backup-tasks-beat"), "--schedule", str(tmp_path / "beat-schedule")],
                                env=env, stdout=beat_log, stderr=subprocess.STDOUT)
        report = celery_env.backup_dir / f"{name}.drill.json"
        wait_for(report.exists, 90, interval=0.5, what="Beat's scheduled drill to write its report")
        assert json.loads(report.read_text())["ok"] is True
        assert "Sending due task scheduled-drill (backup_tasks.scheduled_drill)" in (tmp_path / "beat.log").read_text()
        wait_for(lambda: "Task backup_tasks.scheduled_drill[" in worker.output() and " succeeded in " in
                 worker.output(), 30, what="the worker to log the drill's success")
    finally:
        if beat is not None:
            beat.terminate()
            beat.wait(timeout=15)
        beat_log.close()
        worker.stop()
