"""Several databases from one deployment, with the real services: PostgreSQL, Redis, a real worker (./worker),
the moto S3 server over HTTP, apprise notifications to a local HTTP receiver (json://127.0.0.1:PORT/…), and the
real `backup-tasks-metrics` process scraped over HTTP.

Three databases in one file: orders (URL form, password), billing (key=value form, password, another cron,
time zone and retention) and broken (a database that does not exist, for the failures)."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from backup_tasks.cli.dispatch import follow, outcome
from tests.celery_worker import *  # noqa: F403
from tests.celery_worker import (
    VENV_BIN,
    CeleryEnv,
    Worker,
    backupctl,
    free_port,
    wait_for,
)
from tests.conftest import query, run_sql

pytest_plugins = ["tests.s3_server"]
pytestmark = [pytest.mark.celery, pytest.mark.s3, pytest.mark.slow]

SECRETS = ("Orders-Secret-1", "Billing-Secret-2", "Broken-Secret-3")
FILE = """
[databases.orders]
url_env = "ORDERS_DATABASE_URL"
cron = "0 2 * * *"
retention_days = 14
s3_prefix = "orders/"

[databases.billing]
url_env = "BILLING_DATABASE_URL"
cron = "30 3 * * 1"
timezone = "Europe/Berlin"
retention_days = 3
retention_min_count = 1

[databases.broken]
url_env = "BROKEN_DATABASE_URL"
cron = "*/5 * * * *"
"""


class Receiver:
    """A local HTTP server that keeps every JSON body posted to it, with the time it arrived."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append((time.monotonic(), self.path, json.loads(body or b"{}")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def messages(self, path: str) -> list[dict]:
        return [body for _, p, body in self.received if p == f"/{path}"]

    def close(self) -> None:
        self.server.shutdown()


@dataclass
class Fleet:
    celery: CeleryEnv
    env: dict[str, str]
    urls: dict[str, str]
    dirs: dict[str, Path]
    bucket: str
    receiver: Receiver
    worker: Worker
    s3: object
    extra: list = field(default_factory=list)

    def ctl(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return backupctl(self.celery, *args, env=self.env, **kwargs)

    def keys(self, prefix: str) -> list[str]:
        answer = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for o in answer.get("Contents", []) if o["Key"].endswith(".backup.gz"))


def _seed(url: str, rows: int) -> None:
    run_sql(url, f"CREATE TABLE items (id int PRIMARY KEY, v text); "
                 f"INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, {rows}) g;")


@pytest.fixture
def fleet(celery_env, make_db, s3_endpoint, s3_client, aws_env, tmp_path, monkeypatch):
    (orders_db, _), (billing_db, _) = make_db(), make_db()
    urls = {
        "orders": f"postgresql://postgres:{SECRETS[0]}@127.0.0.1:5432/{orders_db}",
        "billing": f"host=127.0.0.1 port=5432 user=postgres password={SECRETS[1]} dbname={billing_db}",
        "broken": f"postgresql://postgres:{SECRETS[2]}@127.0.0.1:5432/bt_no_such_db_{uuid.uuid4().hex[:6]}",
    }
    _seed(urls["orders"], 300)
    _seed(urls["billing"], 50)
    bucket = f"fleet-{uuid.uuid4().hex[:10]}"
    s3_client.create_bucket(Bucket=bucket)
    (tmp_path / "backup_tasks.toml").write_text(FILE)
    receiver = Receiver()
    values = {
        "BACKUP_DATABASES_FILE": str(tmp_path / "backup_tasks.toml"),
        "ORDERS_DATABASE_URL": urls["orders"], "BILLING_DATABASE_URL": urls["billing"],
        "BROKEN_DATABASE_URL": urls["broken"], "S3_BUCKET_NAME": bucket, "S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "BACKUP_NOTIFY_URLS": receiver.url("failure"), "BACKUP_NOTIFY_SUCCESS_URLS": receiver.url("success"),
    }
    env = {**celery_env.env, **values}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    from backup_tasks.settings import reset_settings_cache

    reset_settings_cache()
    worker = Worker(env, tmp_path / "worker.log").wait_ready()
    dirs = {name: celery_env.backup_dir / name for name in urls}
    yield Fleet(celery_env, env, urls, dirs, bucket, receiver, worker, s3_client)
    worker.stop()
    receiver.close()
    reset_settings_cache()


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def created_name(stdout: str) -> str:
    return Path(next(line for line in stdout.splitlines() if line.startswith("Saved to: "))[10:]).name


def test_db_selects_the_database_for_every_command(fleet):
    orders = created_name(ok(fleet.ctl("--db", "orders", "create", "--upload")))
    # Names have one-second resolution: two backups of the same second (two databases, two directories) are both
    # backup_<that second>, and the listings below could not tell them apart.
    time.sleep(1.05 - time.time() % 1)
    billing = created_name(ok(fleet.ctl("create", "--db", "billing")))  # after the command's name too
    assert billing != orders
    assert [p.name for p in fleet.dirs["orders"].glob("*.backup.gz")] == [orders]
    assert [p.name for p in fleet.dirs["billing"].glob("*.backup.gz")] == [billing]
    assert list(fleet.celery.backup_dir.glob("*.backup.gz")) == [], "nothing in the shared BACKUP_DIR itself"
    ok(fleet.ctl("--db", "billing", "upload", billing))
    assert fleet.keys("orders/") == [f"orders/{orders}"]
    assert fleet.keys("backups/billing/") == [f"backups/billing/{billing}"]

    listing = ok(fleet.ctl("--db", "orders", "list"))
    assert orders in listing and billing not in listing and str(fleet.dirs["orders"]) in listing
    assert billing in ok(fleet.ctl("--db", "billing", "list", "--local"))
    remote = ok(fleet.ctl("--db", "billing", "list-s3"))
    assert billing in remote and orders not in remote and "backups/billing/" in remote

    assert "items: 300 → 300" in ok(fleet.ctl("--db", "orders", "diff", orders))
    other = fleet.ctl("--db", "orders", "diff", billing)  # billing's backup is not in orders' directory
    assert other.returncode == 3 and "no backup named" in other.stderr

    run_sql(fleet.urls["orders"], "DELETE FROM items WHERE id > 100")
    run_sql(fleet.urls["billing"], "INSERT INTO items VALUES (999, 'after')")
    ok(fleet.ctl("--db", "orders", "restore", orders, "--yes"))
    assert query(fleet.urls["orders"], "SELECT count(*) FROM items") == [(300,)]
    assert query(fleet.urls["billing"], "SELECT count(*) FROM items") == [(51,)], "billing was not restored"

    assert orders in ok(fleet.ctl("--db", "orders", "cleanup", "--dry-run"))
    ok(fleet.ctl("--db", "billing", "cleanup"))
    assert "OK: newest backup" in ok(fleet.ctl("--db", "orders", "check", "--max-age", "1h"))
    assert "OK: newest backup" in ok(fleet.ctl("check", "--db", "billing", "--local"))

    several = fleet.ctl("list")
    assert several.returncode == 2 and "several databases (orders, billing, broken)" in several.stderr
    assert "--db NAME" in several.stderr
    unknown = fleet.ctl("--db", "nope", "list")
    assert unknown.returncode == 2 and "no database named 'nope'" in unknown.stderr

    shown = ok(fleet.ctl("databases"))
    assert "3 databases" in shown and "schedule: 30 3 * * 1 (Europe/Berlin); retention: 3 days" in shown
    assert f"newest {orders}" in shown and f"newest {billing}" in shown
    assert "schedule: 0 2 * * * (UTC); retention: 14 days" in shown
    for secret in SECRETS:
        assert secret not in shown


def _old_backup(directory: Path, when: str) -> str:
    name = f"backup_{when}.backup.gz"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(b"an old backup")
    return name


def test_retention_of_one_database_never_touches_the_others_files_or_objects(fleet):
    for db in ("orders", "billing"):
        created_name(ok(fleet.ctl("--db", db, "create", "--upload")))
    planted = {}
    for db, prefix in (("orders", "orders/"), ("billing", "backups/billing/")):
        names = [_old_backup(fleet.dirs[db], "20200101_000000"), _old_backup(fleet.dirs[db], "20200102_000000")]
        for n in names:
            fleet.s3.put_object(Bucket=fleet.bucket, Key=prefix + n, Body=b"an old backup")
        planted[db] = names
    shared = _old_backup(fleet.celery.backup_dir, "20200103_000000")  # the directory above both: no database's

    report = ok(fleet.ctl("--db", "orders", "cleanup"))
    assert all(n in report for n in planted["orders"])
    for db, prefix in (("orders", "orders/"), ("billing", "backups/billing/")):
        on_disk = {p.name for p in fleet.dirs[db].glob("*.backup.gz")}
        in_bucket = {k.removeprefix(prefix) for k in fleet.keys(prefix) if k.endswith(".backup.gz")}
        for n in planted[db]:
            assert (n in on_disk) == (db == "billing"), (db, n, on_disk)
            assert (n in in_bucket) == (db == "billing"), (db, n, in_bucket)
    assert (fleet.celery.backup_dir / shared).exists()

    ok(fleet.ctl("--db", "billing", "cleanup"))
    assert not any((fleet.dirs["billing"] / n).exists() for n in planted["billing"])
    assert len(list(fleet.dirs["orders"].glob("*.backup.gz"))) == 1 and (fleet.celery.backup_dir / shared).exists()


# --- the scheduled backups, notifications and metrics -------------------------------------------------------

class Metrics:
    """The real `backup-tasks-metrics` process."""

    def __init__(self, env: dict[str, str], log: Path, *args: str):
        self.port = free_port()
        self._log = open(log, "wb")
        self.log = log
        self.proc = subprocess.Popen([str(VENV_BIN / "backup-tasks-metrics"), "--port", str(self.port), *args],
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._up, 30, what="the metrics endpoint")

    def _up(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        try:  # a connection, not a scrape: the first scrape is the test's (it lists the storages)
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def text(self, host: str = "127.0.0.1") -> str:
        with urllib.request.urlopen(f"http://{host}:{self.port}/metrics", timeout=30) as response:
            return response.read().decode()

    def samples(self) -> dict[tuple, float]:
        out = {}
        for family in text_string_to_metric_families(self.text()):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._log.close()


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((f"backup_tasks_{name}", tuple(sorted(labels.items()))))


def run_scheduled(app, database: str, slot: str) -> dict:
    kwargs = {"database": database, "slot": slot}
    task_id = app.signature("backup_tasks.scheduled_backup", kwargs=kwargs).apply_async().id
    meta = follow(app, task_id, timeout_s=120)
    if meta["status"] == "SUCCESS":
        return outcome(meta, task_id)
    return {"failed": meta}


def test_a_failing_database_leaves_the_others_scheduled_backups_succeeding(fleet, client_app, tmp_path):
    metrics = Metrics(fleet.env, tmp_path / "metrics.log")
    try:
        before = metrics.samples()
        assert value(before, "outcomes_up") == 1 and value(before, "backups", database="orders", location="s3") == 0
        slot = "2025-11-05T02:00Z"
        started = time.monotonic()
        results = {db: run_scheduled(client_app, db, slot) for db in ("broken", "orders", "billing")}
        assert "failed" in results["broken"]
        for db in ("orders", "billing"):
            r = results[db]
            assert not r["skipped"] and r["db"] == db and r["upload"]["url"].startswith(f"s3://{fleet.bucket}/")
            assert [p.name for p in fleet.dirs[db].glob("*.backup.gz")] == [r["create"]["name"]]
        # The same slot again: each database's own guard, none taken by another's.
        assert run_scheduled(client_app, "orders", slot)["skipped"]

        wait_for(lambda: len(fleet.receiver.messages("success")) >= 2 and fleet.receiver.messages("failure"), 30,
                 what="the notifications")
        failure = fleet.receiver.messages("failure")[0]
        assert failure["type"] == "failure" and "scheduled_backup of broken FAILED" in failure["title"]
        assert "database: broken" in failure["message"] and "does not exist" in failure["message"]
        assert "hint: " in failure["message"] and "duration: " in failure["message"]
        successes = {m["title"] for m in fleet.receiver.messages("success")}
        assert successes == {"backup_tasks: scheduled_backup of orders succeeded",
                             "backup_tasks: scheduled_backup of billing succeeded"}
        body = next(m["message"] for m in fleet.receiver.messages("success") if "orders" in m["title"])
        assert "rows: 300" in body and "size: " in body and results["orders"]["create"]["name"] in body
        print(f"\n3 scheduled backups and their notifications: {time.monotonic() - started:.2f} s")

        time.sleep(0.1)
        after = metrics.samples()  # outcomes are read at each scrape; the listings were cached before: not yet
        created = results["orders"]["create"]
        assert value(after, "last_success_rows", database="orders") == 300
        assert value(after, "last_success_size_bytes", database="orders") == created["compressed_bytes"]
        assert abs(value(after, "last_success_timestamp_seconds", database="orders") - time.time()) < 120
        assert value(after, "last_success_duration_seconds", database="orders") == pytest.approx(
            created["duration_s"])
        assert value(after, "last_job_success", database="orders", job="scheduled_backup") == 1
        assert value(after, "last_job_success", database="broken", job="scheduled_backup") == 0
        assert value(after, "job_failures_total", database="broken", job="scheduled_backup") == 1
        assert value(after, "job_failures_total", database="orders", job="scheduled_backup") == 0
        assert value(after, "last_success_timestamp_seconds", database="broken") is None

        _scan_for_secrets(fleet, [metrics.text(), json.dumps(fleet.receiver.received)])
    finally:
        metrics.stop()


def _redis_value(r, key: bytes):
    kind = r.type(key).decode()
    if kind == "string":
        return r.get(key)
    if kind == "hash":
        return r.hgetall(key)
    if kind == "list":
        return r.lrange(key, 0, -1)
    return r.smembers(key) if kind == "set" else r.zrange(key, 0, -1) if kind == "zset" else b""


def _scan_for_secrets(fleet: Fleet, texts: list[str]) -> None:
    """No password of either form in the notifications, the metrics, the worker's log or anything in Redis."""
    r = fleet.celery.redis()
    for key in r.scan_iter(count=500):
        texts.append(f"{key!r} {_redis_value(r, key)!r}")
    texts.append(fleet.worker.output())
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret} leaked: ...{text[max(text.find(secret) - 200, 0):][:400]}"


def test_metrics_cache_a_big_listing_and_report_drills(fleet, tmp_path):
    """1,000 backups under orders' prefix: the first scrape lists them (one ListObjectsV2 per 1,000 keys), the
    next ones reuse the listing until BACKUP_METRICS_CACHE_S has passed."""
    for i in range(1000):
        name = f"backup_20250101_{i // 60:02d}{i % 60:02d}00.backup.gz"
        fleet.s3.put_object(Bucket=fleet.bucket, Key=f"orders/{name}", Body=b"x" * 10)
    newest = "backup_20250101_163900.backup.gz"
    report = {"ok": True, "backup": newest, "finished_at": "2025-01-02T03:04:05Z"}
    fleet.s3.put_object(Bucket=fleet.bucket, Key=f"orders/{newest}.drill.json", Body=json.dumps(report).encode())
    metrics = Metrics({**fleet.env, "BACKUP_METRICS_CACHE_S": "3"}, tmp_path / "metrics.log")
    try:
        times = []
        for _ in range(3):
            t = time.monotonic()
            samples = metrics.samples()
            times.append(time.monotonic() - t)
        assert value(samples, "backups", database="orders", location="s3") == 1000
        assert value(samples, "newest_backup_timestamp_seconds", database="orders", location="s3") == 1735749540
        assert value(samples, "last_drill_success", database="orders") == 1
        assert value(samples, "last_drill_timestamp_seconds", database="orders") == 1735787045
        print(f"\nscrape with 1,000 backups on the moto server: first {times[0]:.3f} s (S3 client, listing, drill "
              f"report), then {times[1]:.3f} s and {times[2]:.3f} s (cached)")
        fleet.s3.put_object(Bucket=fleet.bucket, Key="orders/backup_20250102_000000.backup.gz", Body=b"y")
        assert value(metrics.samples(), "backups", database="orders", location="s3") == 1000  # cached
        time.sleep(3.2)
        t = time.monotonic()
        assert value(metrics.samples(), "backups", database="orders", location="s3") == 1001
        print(f"after the cache expired: {time.monotonic() - t:.3f} s")
    finally:
        metrics.stop()


def test_shipped_defaults_one_database_notified_and_measured(celery_env, worker, client_app, tmp_path):
    """No databases file, no metrics settings: the one database is `default`, its backup is recorded, the
    metrics endpoint binds 127.0.0.1 only, and notifications stay off (nothing configured, nothing sent)."""
    run_sql(celery_env.db_url, "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 7);")
    task_id = client_app.signature("backup_tasks.create", kwargs={}).apply_async().id
    created = outcome(follow(client_app, task_id, timeout_s=60), task_id)
    metrics = Metrics({k: v for k, v in celery_env.env.items() if not k.startswith("BACKUP_METRICS_")},
                      tmp_path / "metrics.log")
    try:
        samples = metrics.samples()
        assert value(samples, "last_success_rows", database="default") == 7
        assert value(samples, "backups", database="default", location="local") == 1
        assert value(samples, "last_success_size_bytes", database="default") == created["compressed_bytes"]
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{metrics.port}"], capture_output=True, text=True)
        if listening.returncode == 0:
            local = [line.split()[3] for line in listening.stdout.splitlines()]
            assert local == [f"127.0.0.1:{metrics.port}"], listening.stdout
    finally:
        metrics.stop()
    from backup_tasks.settings import Settings

    defaults = Settings.model_fields
    assert defaults["BACKUP_METRICS_ADDRESS"].default == "127.0.0.1"
    assert defaults["BACKUP_NOTIFY_URLS"].default is None and defaults["BACKUP_DATABASES_FILE"].default is None


def test_notification_latency_to_a_local_receiver(monkeypatch):
    """What a notification adds to a job's end: apprise's send to a local json:// receiver, measured."""
    from backup_tasks import notify

    receiver = Receiver()
    try:
        notice = notify.Notice("orders", "create", True, 1.0, 1234, 10, "backup_20250101_000000.backup.gz")
        took = []
        for _ in range(5):
            t = time.monotonic()
            assert notify.send(notice, receiver.url("n"))
            took.append(time.monotonic() - t)
        assert len(receiver.messages("n")) == 5
        took.sort()
        print(f"\nnotification latency (apprise json:// to 127.0.0.1): first {took[-1] * 1000:.0f} ms "
              f"(imports), median {took[2] * 1000:.1f} ms")
        assert not notify.send(notice, "json://127.0.0.1:9/unreachable", timeout=3)  # refused: logged, not raised
    finally:
        receiver.close()


def test_a_discovering_servers_entry_sends_one_scheduled_backup_per_database(celery_env, make_db, client_app,
                                                                            tmp_path):
    """Beat's one entry for a `discover = true` server: its task finds the databases (here: the two this test
    made, by `include`) and sends each its own scheduled backup, into its own directory."""
    (a, a_url), (b, b_url) = make_db(), make_db()
    _seed(a_url, 10)
    _seed(b_url, 20)
    server = a_url.rsplit("/", 1)[0] + "/postgres"
    path = tmp_path / "backup_tasks.toml"
    path.write_text(f'[databases.srv]\nurl_env = "SERVER_URL"\ndiscover = true\ninclude = ["{a}", "{b}"]\n')
    env = {**celery_env.env, "BACKUP_DATABASES_FILE": str(path), "SERVER_URL": server}
    worker = Worker(env, tmp_path / "worker.log").wait_ready()
    try:
        task_id = client_app.signature("backup_tasks.scheduled_backup",
                                       kwargs={"database": "srv", "slot": "2025-11-05T02:00Z"}).apply_async().id
        sent = outcome(follow(client_app, task_id, timeout_s=60), task_id)
        assert sorted(sent["fanned_out"]) == sorted([a, b]) and sent["db"] == "srv"
        for name in (a, b):
            wait_for(lambda n=name: list((celery_env.backup_dir / n).glob("*.backup.gz")), 60,
                     what=f"{name}'s backup")
    finally:
        worker.stop()
