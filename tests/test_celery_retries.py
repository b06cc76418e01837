"""Retries only for transient errors: the classification (behind the core's `raise … from None`), and a worker
putting a create whose database refuses connections into RETRY while a permanent error fails at once."""

from __future__ import annotations

import psycopg2
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from backup_tasks.cli.dispatch import enqueue, failure_error, follow, outcome
from backup_tasks.errors import DatabaseError, ExitCode, StorageError
from backup_tasks.tasks import transient_db, transient_s3
from tests.celery_worker import *  # noqa: F401,F403
from tests.celery_worker import free_port, wait_for


def wrapped(inner: BaseException, outer: BaseException) -> BaseException:
    """outer raised from None while handling inner, as the core and the storages do."""
    try:
        try:
            raise inner
        except type(inner):
            raise outer from None
    except type(outer) as exc:
        return exc


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Put")


@pytest.mark.parametrize("inner, transient", [
    (client_error("SlowDown", 503), True),
    (client_error("Throttling"), True),
    (client_error("RequestTimeout"), True),
    (client_error("InternalError", 500), True),
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
    (client_error("AccessDenied", 403), False),
    (client_error("NoSuchBucket", 404), False),
    (NoCredentialsError(), False),
])
def test_s3_errors(inner, transient):
    assert transient_s3(wrapped(inner, StorageError("S3 upload failed"))) is transient
    assert not transient_db(wrapped(inner, StorageError("S3 upload failed")))


@pytest.mark.parametrize("message, transient", [
    ('connection to server at "127.0.0.1", port 1 failed: Connection refused', True),
    ("could not connect to server: No such file or directory", True),
    ("FATAL:  the database system is starting up", True),
    ("FATAL:  sorry, too many connections for role", True),
    ("server closed the connection unexpectedly", True),
    ('FATAL:  password authentication failed for user "x"', False),
    ('FATAL:  database "nope" does not exist', False),
])
def test_database_errors(message, transient):
    exc = wrapped(psycopg2.OperationalError(message), DatabaseError("cannot connect"))
    assert transient_db(exc) is transient
    assert not transient_s3(exc)


def test_an_error_without_a_transient_cause_is_permanent():
    assert not transient_db(DatabaseError("diff failed: syntax error"))
    assert not transient_s3(StorageError("cannot write"))


@pytest.mark.celery
def test_the_worker_retries_an_unreachable_database_but_not_a_missing_one(celery_env, worker, client_app):
    states: list[dict] = []
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    task_id = enqueue(client_app, "create", {"database_url": unreachable})
    meta = wait_for(lambda: (m := client_app.backend.get_task_meta(task_id))["status"] == "RETRY" and m, 20,
                    what="the create to be retried")
    error = failure_error(meta["result"], task_id)
    assert isinstance(error, DatabaseError) and "cannot connect" in error.message
    client_app.control.revoke(task_id)
    assert "retry 1 of 4" in worker.output()

    missing = celery_env.db_url.rsplit("/", 1)[0] + "/bt_test_does_not_exist"
    task_id = enqueue(client_app, "create", {"database_url": missing})
    with pytest.raises(DatabaseError) as info:
        outcome(follow(client_app, task_id, on_state=states.append, timeout_s=30), task_id)
    assert info.value.exit_code == ExitCode.DATABASE and "does not exist" in info.value.message
    assert "RETRY" not in {m["status"] for m in states}
