"""Issue 15 item 5: `backupctl create --to s3` streams the backup straight into the bucket (moto's S3 server over
real HTTP, as MinIO): one object with its checksum recorded, its manifest beside it, no local copy, and nothing
left behind after a failure — no object, no part object, no unfinished multipart upload."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from backup_tasks.errors import BackupError
from backup_tasks.jobs import run_job
from backup_tasks.settings import reset_settings_cache
from tests.audit import run_writes_audited
from tests.celery_worker import *  # noqa: F403
from tests.celery_worker import Worker, backupctl
from tests.conftest import ADMIN_URL, query, run_sql, wait_for
from tests.oracle import assert_same, snapshot
from tests.s3_server import worker_s3_env

pytest_plugins = ["tests.s3_server"]
pytestmark = pytest.mark.s3

BACKUPCTL = str(Path(sys.executable).parent / "backupctl")


@pytest.fixture
def shop(make_db) -> str:
    _, url = make_db()
    run_sql(url, """
        CREATE TABLE big (id int PRIMARY KEY, v text, blob bytea);
        INSERT INTO big SELECT i, md5(i::text), decode(md5(i::text) || md5((i * 7)::text), 'hex')
        FROM generate_series(1, 200000) i;
        CREATE TABLE small (id serial PRIMARY KEY, v text); INSERT INTO small (v) VALUES ('a'), ('b');
        SELECT lo_from_bytea(0, 'an object');
        ANALYZE;
    """)
    return url


def _objects(s3_client, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket).get("Contents", []))


def _uploads(s3_client, bucket: str) -> list[str]:
    return [u["Key"] for u in s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def _run(args: list[str], env: dict) -> tuple[subprocess.CompletedProcess, list[str]]:
    return run_writes_audited(args, env)


@pytest.mark.parametrize("jobs", ["1", "3"])
def test_a_backup_streamed_to_s3_is_one_verified_object_and_no_local_copy(shop, s3_bucket, s3_client, tmp_path,
                                                                         jobs):
    env = {**os.environ, "DATABASE_URL": shop, "BACKUP_SPLIT_MIN_BYTES": str(2 << 20), "TMPDIR": str(tmp_path)}
    before = snapshot(shop)
    proc, written = _run(["create", "--local", "--to", "s3", "--jobs", jobs], env)
    assert proc.returncode == 0, proc.stderr
    backups_dir = Path(os.environ["BACKUP_DIR"])
    assert [w for w in written if w.startswith((str(backups_dir), str(tmp_path)))] == []  # not a byte on disk
    keys = _objects(s3_client, s3_bucket)
    (name,) = [k.removeprefix("backups/") for k in keys if k.endswith(".backup.gz")]
    assert keys == [f"backups/{name}", f"backups/{name}.manifest.json"]  # no part object left
    assert _uploads(s3_client, s3_bucket) == []
    body = s3_client.get_object(Bucket=s3_bucket, Key=f"backups/{name}")
    data = body["Body"].read()
    assert body["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["Metadata"]["size"] == str(len(data))
    doc = json.load(gzip.open(io.BytesIO(data)))
    assert {t: len(v["data"]) for t, v in doc["tables"].items()} == {"big": 200000, "small": 2}
    manifest = json.loads(s3_client.get_object(Bucket=s3_bucket, Key=f"backups/{name}.manifest.json")["Body"].read())
    assert (manifest["name"], manifest["sha256"]) == (name, body["Metadata"]["sha256"])
    # It restores like any uploaded backup (checksum verified on the way down).
    run_sql(shop, "DELETE FROM big WHERE id % 3 = 0; SELECT lo_unlink(oid) FROM pg_largeobject_metadata")
    restored = subprocess.run([BACKUPCTL, "restore-s3", name, "--yes", "--local"], env=env, capture_output=True,
                              text=True, timeout=300)
    assert restored.returncode == 0, restored.stderr
    assert_same(before, snapshot(shop))
    assert "Saved to: s3://" in proc.stdout and ("Written in" in proc.stdout) == (jobs != "1")


def test_a_failed_streamed_backup_leaves_nothing_in_the_bucket(shop, s3_bucket, s3_client, monkeypatch):
    """The snapshot holder terminated while parts stream into temporary objects: no backup object, no part
    object, no unfinished multipart upload (which would keep costing storage)."""
    monkeypatch.setenv("DATABASE_URL", shop)
    monkeypatch.setenv("BACKUP_SPLIT_MIN_BYTES", str(4 << 20))
    monkeypatch.setenv("BACKUP_BATCH_BYTES", str(128 << 10))
    reset_settings_cache()
    database = shop.rsplit("/", 1)[1]
    killed = []

    def kill_the_holder() -> None:
        def holder():
            rows = query(ADMIN_URL, "SELECT pid FROM pg_stat_activity WHERE application_name = 'backup_tasks' "
                                    "AND state = 'idle in transaction' AND datname = %s", (database,))
            parts = query(ADMIN_URL, "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                     "'backup_tasks_part' AND datname = %s", (database,))[0][0]
            return rows[0][0] if rows and parts else None
        pid = wait_for(holder, 60, interval=0.005, what="parts reading beside the snapshot holder")
        killed.extend(query(ADMIN_URL, "SELECT pg_terminate_backend(%s)", (pid,))[0])

    thread = threading.Thread(target=kill_the_holder)
    thread.start()
    with pytest.raises(BackupError):
        run_job("create", {"to": "s3", "jobs": 2})
    thread.join()
    assert killed == [True]
    assert _objects(s3_client, s3_bucket) == [] and _uploads(s3_client, s3_bucket) == []


@pytest.mark.celery
def test_queued_jobs_3_to_s3_on_workers(celery_env, s3_endpoint, s3_client, tmp_path, make_db):
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    celery_env.env.update({**worker_s3_env(s3_endpoint, bucket, tmp_path), "BACKUP_SPLIT_MIN_BYTES": str(1 << 20)})
    run_sql(celery_env.db_url, "CREATE TABLE t (id int PRIMARY KEY, v text);"
                               "INSERT INTO t SELECT i, repeat(md5(i::text), 3) FROM generate_series(1, 100000) i;"
                               "ANALYZE;")
    before = snapshot(celery_env.db_url)
    worker = Worker(celery_env.env, tmp_path / "worker.log", concurrency=2).wait_ready()
    try:
        made = backupctl(celery_env, "create", "--to", "s3", "--jobs", "3", timeout=180)
        assert made.returncode == 0, made.stderr
        name = re.search(r"(backup_\d{8}_\d{6}(?:_\d+)?\.backup\.gz)", made.stdout).group(1)
        assert list(celery_env.backup_dir.iterdir()) == []  # the worker kept no local copy
        assert _uploads(s3_client, bucket) == []
        run_sql(celery_env.db_url, "DELETE FROM t WHERE id < 500")
        restored = backupctl(celery_env, "restore-s3", name, "--yes", timeout=180)
        assert restored.returncode == 0, restored.stderr
    finally:
        worker.stop()
    assert_same(before, snapshot(celery_env.db_url))
