"""The Celery app: Redis broker and result backend, JSON only, limits and acknowledgement chosen per job.

`celery -A backup_tasks.celery_app worker|beat|flower` finds `app` here. Importing this module connects to
nothing and reads no settings (except under `celery flower`, see _flower_defaults): the configuration is a
promise (`add_defaults`) evaluated from get_settings() the first time Celery needs it, so the CLI's --local
path and the tests import it freely, with or without Redis.

Acknowledgement (the choice that decides what a crash does):
- Jobs that are safe to run twice (create, diff, verify, listings, upload, download, cleanup, the scheduled
  backup) are acknowledged late and rejected (requeued) when their worker process dies: a killed worker's job
  runs again elsewhere. tasks.py counts deliveries so a job that kills its worker every time stops after 3.
- restore and restore-s3 are acknowledged when they start (acks_late=False): a restore cut off by a crash is
  rolled back by PostgreSQL and is NOT redelivered, so one `backupctl restore` never replaces the data twice
  (e.g. hours later, over rows written since). The user sees the job fail or be lost and decides.
- visibility_timeout (how long Redis waits for an acknowledgement before delivering a message again) is far
  above the hard time limit: a reserved job may wait for one running job and then run for the hard limit
  itself, so 2 x hard limit + 1 h. A shorter value would start a second copy of a long backup.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

from celery import Celery
from celery.beat import PersistentScheduler
from celery.signals import worker_process_init

from .errors import ConfigError
from .settings import Settings, get_settings

logger = logging.getLogger(__name__)

# Retries for transient errors (S3 throttling, connection resets): exponential backoff with full jitter,
# 5 s, 10 s, 20 s, 40 s at most (capped at 5 min), far below the visibility timeout.
RETRY_BACKOFF_S = 5
RETRY_BACKOFF_MAX_S = 300
MAX_RETRIES = 4
# The control command a worker answers with the database its jobs act on (tasks.py registers it, the client asks
# it instead of a plain ping: the worker's main process answers even when all its pool processes are busy).
TARGET_COMMAND = "backup_tasks_target"


def visibility_timeout(settings: Settings) -> int:
    return 2 * int(settings.CELERY_TASK_TIME_LIMIT) + 3600


def celery_config(settings: Settings) -> dict[str, Any]:
    """The app's configuration from the settings (pure: tests compare it)."""
    vt = visibility_timeout(settings)
    tz = str(settings.BACKUP_TIMEZONE).strip() or "UTC"
    try:
        ZoneInfo(tz)
    except Exception:  # noqa: BLE001 - any bad zone: Beat refuses to start (beat_schedule.py); others run in UTC
        tz = "UTC"
    return {
        "broker_url": settings.CELERY_BROKER_URL.get_secret_value(),
        "result_backend": settings.CELERY_RESULT_BACKEND.get_secret_value(),
        # JSON only: pickle from a broker is remote code execution.
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # One reserved job per process: a reserved job is unacknowledged too, and waits.
        "worker_prefetch_multiplier": 1,
        # Replaced after a job that left it holding more (the job ends first; the next one gets a fresh process).
        # Held, not peak: see _recycle_by_memory_held.
        "worker_max_memory_per_child": int(settings.CELERY_WORKER_MAX_MEMORY_PER_CHILD_MB) * 1024 or None,
        # A queue of its own for every worker node: a parallel backup's helpers go to the coordinator's node,
        # whose pool processes share its BACKUP_DIR (tasks.JobTask.part_runner).
        "worker_direct": True,
        # Per task in tasks.py (restore: early ack); these are the defaults for anything else.
        "task_acks_late": False,
        "task_reject_on_worker_lost": False,
        "task_acks_on_failure_or_timeout": True,
        "task_soft_time_limit": int(settings.CELERY_TASK_SOFT_TIME_LIMIT),
        "task_time_limit": int(settings.CELERY_TASK_TIME_LIMIT),
        "broker_transport_options": {"visibility_timeout": vt, "socket_connect_timeout": 5},
        "result_backend_transport_options": {"visibility_timeout": vt},
        "visibility_timeout": vt,
        "redis_socket_connect_timeout": 5,
        "broker_connection_timeout": 4,
        "broker_connection_retry_on_startup": True,
        # A worker that lost the broker stops its late-acked jobs: their messages are delivered again anyway.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "result_expires": int(settings.CELERY_RESULT_EXPIRES),
        "task_track_started": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "timezone": tz,
        "enable_utc": True,
        # Beat: the schedule is built from BACKUP_CRON when Beat starts (BackupScheduler), not at import.
        "beat_scheduler": "backup_tasks.celery_app:BackupScheduler",
        "beat_schedule_filename": str(Path(tempfile.gettempdir()) / "backup_tasks-celerybeat-schedule"),
    }


def load_beat_schedule_module() -> ModuleType:
    """beat_schedule, the top-level module the wheel installs beside the package (pyproject's py-modules)."""
    try:
        import beat_schedule  # type: ignore[import-not-found]
    except ModuleNotFoundError as exc:
        if exc.name != "beat_schedule":  # beat_schedule itself failed to import something: show that error
            raise
        raise ConfigError("the module beat_schedule is not installed",
                          hint="Install the backup_tasks package (pip install . or its wheel; `make install` in "
                               "a checkout): it carries beat_schedule.py.") from None
    return beat_schedule


class BackupScheduler(PersistentScheduler):
    """Celery's persistent scheduler, with the schedule built from the settings when Beat starts.

    An invalid BACKUP_CRON / BACKUP_TIMEZONE stops Beat with `Error: …` naming the variable and the field,
    instead of failing every process that imports the app.
    """

    def setup_schedule(self) -> None:
        try:
            schedule = load_beat_schedule_module().build_beat_schedule(get_settings())
        except ConfigError as exc:
            logger.critical("beat cannot start: %s", exc.message)
            print(f"Error: {exc.message}", file=sys.stderr)
            if exc.hint:
                print(f"Hint: {exc.hint}", file=sys.stderr)
            raise SystemExit(int(exc.exit_code)) from None
        self.app.conf.beat_schedule = schedule
        for name, entry in schedule.items():
            logger.info("beat: %s runs %s on cron %r (%s)", name, entry["task"], entry["kwargs"]["cron"],
                        entry["kwargs"]["timezone"])
        super().setup_schedule()


def _flower_defaults() -> None:
    """`celery flower` reads FLOWER_* from the environment only (not from .env, not from the app's conf).

    Export the settings' values (FLOWER_ADDRESS defaults to 127.0.0.1, so Flower is not on every interface)
    unless the environment already has them; Flower's own --address/--port/--basic-auth still win.
    """
    try:
        settings = get_settings()
        values = {
            "FLOWER_ADDRESS": settings.FLOWER_ADDRESS,
            "FLOWER_PORT": str(settings.FLOWER_PORT),
            "FLOWER_BASIC_AUTH": settings.FLOWER_BASIC_AUTH.get_secret_value() if settings.FLOWER_BASIC_AUTH else None,
        }
    except Exception:  # noqa: BLE001 - invalid settings: still never bind all interfaces by default
        values = {"FLOWER_ADDRESS": "127.0.0.1"}
    for name, value in values.items():
        if value:
            os.environ.setdefault(name, value)


def _is_flower_command(argv: list[str]) -> bool:
    return "flower" in argv[1:]


def make_app() -> Celery:
    app = Celery("backup_tasks", include=["backup_tasks.tasks"])
    app.add_defaults(lambda: celery_config(get_settings()))
    return app


app = make_app()


@worker_process_init.connect
def _recycle_by_memory_held(**_: object) -> None:
    """In each pool process: worker_max_memory_per_child compares what the process holds after a job.

    billiard checks ru_maxrss there, the process's peak since it started. A pool process starts at ~65 MB (the
    pages of the parent it was forked from count) and an ordinary job peaks at 85-95 MB, so with the limit at
    80 MB every job replaced its process: measured, 6 backups in a row each ran in a new process, and 2 of the
    6 queued commands waited 3.4-4.8 s between the worker receiving their job and a process starting it (a known
    race, celery#9588: a job handed to the process that is leaving waits for the pool's timer to replace it). The
    task returns freed memory after each job (JobTask.after_return), so what the process holds then is what the
    next job inherits: that is compared instead (measured on the benchmark's 3 M rows: ~80 MB after a backup, ~86
    after a diff, ~97 after a restore). A billiard without `mem_rss` keeps its own check."""
    import billiard.pool

    from .memory import resident_kb

    peak = getattr(billiard.pool, "mem_rss", None)
    if peak is not None:
        billiard.pool.mem_rss = lambda: resident_kb() or peak()


if _is_flower_command(sys.argv):
    _flower_defaults()
