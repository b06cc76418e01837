"""Flower (`celery -A backup_tasks.celery_app flower`): on loopback by default, basic auth from
FLOWER_BASIC_AUTH on the UI and API, tasks listed with their progress, Prometheus /metrics."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from backup_tasks.cli.dispatch import enqueue, follow, outcome
from tests.celery_worker import *  # noqa: F403
from tests.celery_worker import CELERY, ROOT, free_port, wait_for
from tests.conftest import run_sql

pytestmark = pytest.mark.celery

AUTH = "ops:flower-test-pw"


def get(port: int, path: str, auth: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on `port`, from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.rsplit(":", 1)
            if state == "0A" and int(port_hex, 16) == port:
                found.add(address)
    return found


def test_flower_binds_loopback_requires_basic_auth_and_lists_the_tasks(celery_env, worker, client_app, tmp_path):
    port = free_port()
    env = {**celery_env.env, "FLOWER_BASIC_AUTH": AUTH, "FLOWER_PORT": str(port)}
    log = open(tmp_path / "flower.log", "wb")
    flower = subprocess.Popen([CELERY, "-A", "backup_tasks.celery_app", "flower", "--db=" + str(tmp_path / "fl")],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: get(port, "/healthcheck")[0] == 200, 20, what="Flower to answer")
        assert listening_addresses(port) == {"0100007F"}, "Flower must listen on 127.0.0.1 only by default"
        assert get(port, "/api/tasks")[0] == 401
        assert get(port, "/api/tasks", "ops:wrong")[0] == 401
        assert get(port, "/", None)[0] == 401
        time.sleep(1.0)  # Flower subscribes to the worker's events after it answers HTTP

        run_sql(celery_env.db_url, "CREATE TABLE t (id int PRIMARY KEY, v text);"
                                   "INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 300000) i;")
        task_id = enqueue(client_app, "create", {})
        outcome(follow(client_app, task_id, timeout_s=60), task_id)

        def listed():
            status, body = get(port, "/api/tasks", AUTH)
            tasks = json.loads(body) if status == 200 else {}
            return tasks.get(task_id, {}).get("state") == "SUCCESS" and tasks

        tasks = wait_for(listed, 15, interval=0.3, what="Flower to list the task as SUCCESS")
        assert tasks[task_id]["name"] == "backup_tasks.create"
        status, body = get(port, f"/api/task/info/{task_id}", AUTH)
        info = json.loads(body)
        assert status == 200 and info["state"] == "SUCCESS" and "'job': 'create'" in info["result"]

        status, metrics = get(port, "/metrics")  # Prometheus scrapes without credentials
        assert status == 200 and b"flower_events_total" in metrics
        # The task-progress events reached Flower, which shows the running task as PROGRESS (it ignores the
        # result backend's PROGRESS state, flower#1130).
        progress = [line for line in metrics.decode().splitlines()
                    if line.startswith("flower_events_total") and 'type="task-progress"' in line
                    and 'task="backup_tasks.create"' in line]
        assert progress and float(progress[0].rsplit(" ", 1)[1]) >= 1, metrics.decode()[-2000:]
    finally:
        flower.terminate()
        flower.wait(timeout=15)
        log.close()
    assert "flower-test-pw" not in (tmp_path / "flower.log").read_text(errors="replace")

