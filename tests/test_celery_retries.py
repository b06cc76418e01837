"""Retries only for transient errors, decided by the error's own `transient` kind (set where it is raised) and
the kinds each task declares; the kind survives the JSON payload to the client. A real worker retries a create
whose database refuses connections and an upload whose S3 endpoint is down, but not a missing database, and
never a restore."""

from __future__ import annotations

import pytest

from backup_tasks.celery_app import app
from backup_tasks.cli.dispatch import enqueue, error_from_payload, failure_error, follow, outcome
from backup_tasks.errors import BackupError, BusyError, DatabaseError, ExitCode, NotFoundError, StorageError, Transient
from backup_tasks.pg.connection import connect
from backup_tasks.tasks import JobFailed, TransientJobFailed
from tests.celery_worker import *  # noqa: F403
from tests.celery_worker import Worker, free_port, wait_for

pytest_plugins = ["tests.s3_server"]

DECLARED = {  # the table: which kinds each job retries
    "create": {Transient.DATABASE}, "scheduled_backup": {Transient.DATABASE},
    "upload": {Transient.STORAGE}, "download": {Transient.STORAGE}, "list_s3": {Transient.STORAGE},
    "verify_s3": {Transient.STORAGE}, "cleanup": {Transient.STORAGE}, "restore_s3": {Transient.STORAGE},
    "restore": set(), "diff": set(), "verify": set(), "list_local": set(),
}


def task(job: str):
    import backup_tasks.tasks  # noqa: F401  (registers the tasks)

    return app.tasks[f"backup_tasks.{job}"]


def test_each_task_declares_the_kinds_it_retries_and_its_acknowledgement():
    for job, kinds in DECLARED.items():
        assert set(task(job).retry_on) == kinds, job
        assert task(job).acks_late is (job not in ("restore", "restore_s3")), job  # restores: early, never again
        assert task(job).reject_on_worker_lost is task(job).acks_late, job


@pytest.mark.parametrize("job", sorted(DECLARED))
@pytest.mark.parametrize("kind", [Transient.DATABASE, Transient.STORAGE, None])
def test_a_failure_is_retried_exactly_when_its_kind_is_declared(job, kind):
    failed = task(job).failed(StorageError("passing trouble", transient=kind), {"file": "/x/backup.gz"})
    assert isinstance(failed, JobFailed)
    assert isinstance(failed, TransientJobFailed) is (kind in DECLARED[job])
    assert failed.payload["transient"] == (kind.value if kind else None) and failed.payload["file"] == "backup.gz"


@pytest.mark.parametrize("error", [
    DatabaseError("cannot connect to database app on db:5432", transient=Transient.DATABASE),
    StorageError("S3 upload failed", hint="try later", transient=Transient.STORAGE),
    NotFoundError("no backup named x"), BusyError("database app is being restored"), BackupError("bug"),
])
def test_the_payload_round_trip_keeps_class_hint_exit_code_and_kind(error):
    payload = task("upload").failed(error, {}).payload
    back = error_from_payload(payload)
    assert type(back) is type(error) and back.message == error.message and back.hint == error.hint
    assert back.exit_code == error.exit_code and back.transient == error.transient


def test_a_connection_error_carries_its_kind_from_where_it_is_raised(make_db):
    _, url = make_db()
    with pytest.raises(DatabaseError) as refused:
        connect(f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
    assert refused.value.transient is Transient.DATABASE
    with pytest.raises(DatabaseError) as missing:
        connect(url.rsplit("/", 1)[0] + "/bt_test_does_not_exist")
    assert missing.value.transient is None and "does not exist" in missing.value.message


@pytest.mark.celery
def test_the_worker_retries_by_kind_and_never_retries_a_restore(celery_env, client_app, tmp_path):
    env = {**celery_env.env, "S3_BUCKET_NAME": "unreachable", "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    worker = Worker(env, tmp_path / "worker.log").wait_ready()
    try:
        unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
        error = _retried(client_app, "create", {"database_url": unreachable})
        assert isinstance(error, DatabaseError) and "cannot connect" in error.message
        assert error.transient is Transient.DATABASE  # the kind travelled to the client
        assert "retry 1 of 4" in worker.output()

        (celery_env.backup_dir / "backup_20250101_000000.backup.gz").write_bytes(b"not read before the upload")
        error = _retried(client_app, "upload", {"file": "backup_20250101_000000.backup.gz"})
        assert isinstance(error, StorageError) and error.transient is Transient.STORAGE

        missing = celery_env.db_url.rsplit("/", 1)[0] + "/bt_test_does_not_exist"
        info = _failed_without_retry(client_app, "create", {"database_url": missing}, DatabaseError)
        assert info.exit_code == ExitCode.DATABASE and "does not exist" in info.message

        (celery_env.backup_dir / "backup_20250102_000000.backup.gz").write_bytes(b"x")
        info = _failed_without_retry(client_app, "restore", {"file": "backup_20250102_000000.backup.gz",
                                                             "database_url": unreachable}, BackupError)
        assert info.exit_code in (ExitCode.DATABASE, ExitCode.INVALID_BACKUP), info.message
    finally:
        worker.stop()


def _retried(app, job: str, kwargs: dict) -> BackupError:
    task_id = enqueue(app, job, kwargs)
    meta = wait_for(lambda: (m := app.backend.get_task_meta(task_id))["status"] == "RETRY" and m, 30,
                    what=f"the {job} to be retried")
    app.control.revoke(task_id)
    return failure_error(meta["result"], task_id)


def _failed_without_retry(app, job: str, kwargs: dict, error: type[BackupError]) -> BackupError:
    states: list[dict] = []
    task_id = enqueue(app, job, kwargs)
    with pytest.raises(error) as info:
        outcome(follow(app, task_id, on_state=states.append, timeout_s=30), task_id)
    assert "RETRY" not in {m["status"] for m in states}
    return info.value
