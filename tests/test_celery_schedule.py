"""The scheduled backup: one backup per schedule slot whatever the number of deliveries (two Beats, a
redelivered message), and a real `celery beat` with BACKUP_CRON='* * * * *' making it at the scheduled minute."""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from backup_tasks import queue_state
from backup_tasks.celery_app import load_beat_schedule_module
from backup_tasks.cli.dispatch import follow, outcome
from backup_tasks.names import parse_name
from tests.celery_worker import *  # noqa: F403
from tests.celery_worker import ROOT, VENV_BIN, Worker, wait_for
from tests.conftest import run_sql

pytestmark = pytest.mark.celery


def backups(celery_env) -> list[str]:
    return sorted(p.name for p in celery_env.backup_dir.glob("*.backup.gz"))


def run_scheduled(app, task_id: str | None = None, **kwargs) -> str:
    options = {"task_id": task_id} if task_id else {}
    return app.signature("backup_tasks.scheduled_backup", kwargs=kwargs).apply_async(**options).id


def result_of(app, task_id: str) -> dict:
    return outcome(follow(app, task_id, timeout_s=60), task_id)


def test_two_deliveries_for_one_slot_make_one_backup(celery_env, worker, client_app):
    run_sql(celery_env.db_url, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000);")
    slot = "2025-11-05T02:00Z"
    # Two Beats fire the same slot at once: both messages are taken by the two worker processes together.
    ids = [run_scheduled(client_app, slot=slot), run_scheduled(client_app, slot=slot)]
    results = [result_of(client_app, i) for i in ids]
    assert sorted(r["skipped"] for r in results) == [False, True]
    made = next(r for r in results if not r["skipped"])
    skipped = next(r for r in results if r["skipped"])
    assert made["job"] == skipped["job"] == "scheduled_backup" and made["slot"] == skipped["slot"] == slot
    assert skipped["reason"] == f"slot {slot} was already taken by task {ids[results.index(made)]}"
    assert backups(celery_env) == [made["create"]["name"]]
    assert made["upload"] is None  # S3 is not configured for this worker
    assert made["cleanup"]["locations"]["local"]["keep"] == [made["create"]["name"]]

    # The next slot is a new backup.
    nxt = result_of(client_app, run_scheduled(client_app, slot="2025-11-06T02:00Z"))
    assert not nxt["skipped"] and len(backups(celery_env)) == 2


def test_a_redelivered_message_finishes_the_job_without_a_second_backup(celery_env, worker, client_app):
    run_sql(celery_env.db_url, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);")
    task_id = str(uuid.uuid4())
    first = result_of(client_app, run_scheduled(client_app, task_id=task_id, slot="2025-11-05T02:00Z"))
    assert not first["skipped"]
    client_app.backend.forget(task_id)
    # The same message again (as Redis delivers it when the acknowledgement was lost): same task id.
    again = result_of(client_app, run_scheduled(client_app, task_id=task_id, slot="2025-11-05T02:00Z"))
    assert not again["skipped"] and again["create"] == {"name": first["create"]["name"], "resumed": True}
    assert backups(celery_env) == [first["create"]["name"]]


def test_without_a_slot_argument_the_worker_computes_it_from_backup_cron(celery_env, worker, client_app):
    run_sql(celery_env.db_url, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);")
    ids = [run_scheduled(client_app), run_scheduled(client_app)]  # the default BACKUP_CRON: 0 2 * * *
    results = [result_of(client_app, i) for i in ids]
    expected = load_beat_schedule_module().slot_id(
        load_beat_schedule_module().previous_due("0 2 * * *", datetime.now(UTC), "UTC"))
    assert {r["slot"] for r in results} == {expected}
    assert sorted(r["skipped"] for r in results) == [False, True] and len(backups(celery_env)) == 1


@pytest.mark.slow
def test_two_beats_with_a_one_minute_cron_make_one_backup_at_the_scheduled_minute(celery_env, tmp_path):
    """Acceptance: a Beat-driven backup appears at the scheduled minute. Two Beats run by mistake: still one."""
    run_sql(celery_env.db_url, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100);")
    env = {**celery_env.env, "BACKUP_CRON": "* * * * *"}
    worker = Worker(env, tmp_path / "worker.log").wait_ready()
    beats = []
    try:
        for i in range(2):
            log = open(tmp_path / f"beat{i}.log", "wb")
            beats.append((subprocess.Popen(
                # The entry point that `make beat` and the image run (backup_tasks/processes.py).
                [str(VENV_BIN / "backup-tasks-beat"), "--schedule", str(tmp_path / f"beat{i}-schedule")],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        started = datetime.now(UTC)
        wait_for(lambda: worker.output().count("Task backup_tasks.scheduled_backup[") >= 4, 80, interval=0.5,
                 what="both Beats' scheduled backups to be received and finished")
        for proc, _ in beats:
            assert proc.poll() is None, (tmp_path / "beat0.log").read_text()
    finally:
        for proc, log in beats:
            proc.terminate()
            proc.wait(timeout=15)
            log.close()
        worker.stop()
    names = backups(celery_env)
    assert len(names) == 1, names
    made_at, _ = parse_name(names[0])
    slot_minute = made_at.replace(second=0)
    assert started < slot_minute + timedelta(minutes=1)  # the first minute boundary after Beat started
    assert made_at.second < 30  # taken right at the scheduled minute, not later
    slot = slot_minute.strftime("%Y-%m-%dT%H:%MZ")
    value = celery_env.redis().get(queue_state.slot_key(celery_env.db_url, slot))
    assert value and value.decode().endswith(names[0])
    beat_logs = "".join((tmp_path / f"beat{i}.log").read_text() for i in range(2))
    assert beat_logs.count("Sending due task scheduled-backup (backup_tasks.scheduled_backup)") >= 2
    assert "skipped" in worker.output() or "already has it" in worker.output()
