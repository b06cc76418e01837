"""Issue 7, queue side: pickle is never deserialised, and secrets never leave the worker's environment.

A full cycle (create with upload, diff, restore, list-s3) runs through a real worker, a real Redis that needs
a password, a real S3 endpoint and Flower, with known secret values; every log, result, event and file is then
searched for them."""

from __future__ import annotations

import base64
import gzip
import pathlib
import subprocess
import time
import urllib.request

import pytest
import redis

from tests.celery_worker import *  # noqa: F403
from tests.celery_worker import CELERY, ROOT, Worker, backupctl, free_port, redis_values, wait_for
from tests.conftest import run_sql

pytestmark = [pytest.mark.celery, pytest.mark.adversarial]
pytest_plugins = ["tests.s3_server"]


class Touch:
    """Unpickling this creates a file: proof that a worker deserialised pickle."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def test_a_pickled_message_is_rejected_and_never_unpickled(celery_env, worker, client_app, tmp_path):
    marker = tmp_path / "unpickled"
    client_app.conf.accept_content = ["json", "pickle"]  # only this sender is willing to speak pickle
    client_app.send_task("backup_tasks.create", kwargs={"output_dir": Touch(str(marker))}, serializer="pickle")
    wait_for(lambda: "untrusted content" in worker.output(), 15, what="the worker to refuse the message")
    time.sleep(1)
    assert not marker.exists(), "the worker unpickled a message"
    assert not list(celery_env.backup_dir.glob("backup_*")), "a job ran from a pickled message"


SECRETS = {"db": "Db-Secret-7f3a", "aws_key": "AKIASECRET7F3A", "aws_secret": "aws-secret-7f3a-XYZ",
           "redis": "redis-secret-7f3a", "flower": "flower-secret-7f3a"}


@pytest.fixture
def secret_redis(tmp_path):
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--requirepass", SECRETS["redis"], "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, password=SECRETS["redis"])
    wait_for(lambda: _ping(client), 10, what="the password-protected Redis")
    yield port, client
    proc.terminate()
    proc.wait(timeout=10)


def _ping(client) -> bool:
    try:
        return client.ping()
    except redis.RedisError:
        return False


def _get(port: int, path: str, auth: str) -> bytes:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read()


def database_url(form: str, name: str, password: str = SECRETS["db"]) -> str:
    """The test's database in libpq's two forms, both with a password (trust auth ignores it)."""
    if form == "url":
        return f"postgresql://postgres:{password}@localhost:5432/{name}"
    return f"host=localhost port=5432 dbname={name} user=postgres password={password}"


@pytest.mark.parametrize("form", ["url", "keywords"])
def test_secrets_never_appear_in_logs_results_events_or_files(form, celery_env, secret_redis, s3_bucket, s3_endpoint,
                                                               tmp_path, monkeypatch):
    """Issue 13.1: the worker's DATABASE_URL in either form, including a worker whose database does not exist."""
    port, rclient = secret_redis
    broker = f"redis://:{SECRETS['redis']}@127.0.0.1:{port}/0"
    db_url = database_url(form, celery_env.db_name)
    env = {**celery_env.env, "CELERY_BROKER_URL": broker, "CELERY_RESULT_BACKEND": broker, "DATABASE_URL": db_url,
           "AWS_ACCESS_KEY_ID": SECRETS["aws_key"], "AWS_SECRET_ACCESS_KEY": SECRETS["aws_secret"],
           "AWS_DEFAULT_REGION": "us-east-1", "S3_ENDPOINT_URL": s3_endpoint, "S3_BUCKET_NAME": s3_bucket,
           "FLOWER_BASIC_AUTH": f"ops:{SECRETS['flower']}", "BACKUP_DIR": str(celery_env.backup_dir)}
    celery_env.env.clear()
    celery_env.env.update(env)
    run_sql(celery_env.db_url, "CREATE TABLE t (id int PRIMARY KEY, v text);"
                               "INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 2000) i;")
    worker = Worker(env, tmp_path / "worker.log").wait_ready()
    flower_port = free_port()
    flower_log = open(tmp_path / "flower.log", "wb")
    flower = subprocess.Popen([CELERY, "-A", "backup_tasks.celery_app", "flower", f"--port={flower_port}",
                               "--db=" + str(tmp_path / "fl")], cwd=ROOT, env=env, stdout=flower_log,
                              stderr=subprocess.STDOUT)
    outputs: list[str] = []
    try:
        wait_for(lambda: _flower_up(flower_port), 20, what="Flower")
        time.sleep(1)
        for args in (["create", "--upload"], ["list-s3"]):
            result = backupctl(celery_env, *args)
            assert result.returncode == 0, result.stderr
            outputs += [result.stdout, result.stderr]
        (backup,) = celery_env.backup_dir.glob("backup_*.backup.gz")
        for args in (["diff", backup.name], ["restore", backup.name, "--yes"], ["restore-s3", backup.name, "--yes"]):
            result = backupctl(celery_env, *args)
            assert result.returncode == 0, result.stderr
            outputs += [result.stdout, result.stderr]
        failed = backupctl(celery_env, "restore", "backup_20000101_000000.backup.gz", "--yes")
        assert failed.returncode != 0  # a failure path too: its error text must be clean as well
        outputs += [failed.stdout, failed.stderr]
        flower_api = _get(flower_port, "/api/tasks", f"ops:{SECRETS['flower']}").decode()
        assert "backup_tasks.create" in flower_api
        outputs.append(flower_api)
    finally:
        flower.terminate()
        flower.wait(timeout=15)
        flower_log.close()
        worker.stop()
    outputs += _with_a_missing_database(form, celery_env, env, tmp_path, backup.name)

    outputs.append(worker.output())
    outputs.append((tmp_path / "flower.log").read_text(errors="replace"))
    outputs += redis_values(rclient)  # task results, states and anything else kept in Redis
    with gzip.open(backup) as f:
        outputs.append(f.readline().decode())  # the metadata line
    outputs.append(backup.with_name(backup.name + ".sha256").read_text())
    everything = "\n".join(outputs)
    assert "backup_tasks.restore" in everything  # the search covered real material
    leaked = [name for name, value in SECRETS.items() if value in everything]
    assert not leaked, f"secrets leaked: {leaked}"


def _with_a_missing_database(form: str, celery_env, env: dict[str, str], tmp_path, name: str) -> list[str]:
    """A worker whose DATABASE_URL names a database that does not exist: the connection errors of a backup and a
    restore go to the client, the worker's log, the webhook-free failure payloads in Redis."""
    wrong = {**env, "DATABASE_URL": database_url(form, "bt_test_no_such_database")}
    worker = Worker(wrong, tmp_path / "wrong-db-worker.log").wait_ready()
    outputs: list[str] = []
    try:
        for args in (["create"], ["restore", name, "--yes"]):
            result = backupctl(celery_env, *args)
            assert result.returncode == 6 and "does not exist" in result.stderr, result.stderr
            outputs += [result.stdout, result.stderr]
    finally:
        worker.stop()
    return outputs + [worker.output()]


def _flower_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False
