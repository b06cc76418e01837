"""The console entry points of a deployment: `backup-tasks-worker`, `backup-tasks-beat`, `backup-tasks-flower`,
and `backup-tasks-metrics` (the Prometheus endpoint, the one that is not a Celery process).

Each one is Celery's own `celery` command with this app and our defaults put in front of the user's arguments,
so every Celery option works unchanged and a repeated option wins over the default (Click keeps the last
value): `backup-tasks-worker -n other@%h -Q q` runs `celery -A backup_tasks.celery_app worker … -n other@%h -Q q`.
`./worker`, `make worker|beat|flower`, the Docker image and docker-compose.yml all start the processes here,
so the defaults live in one place.

The command runs in this process (no exec of a `celery` found on PATH): whatever interpreter has the package
installed has Celery too, wherever pip put the scripts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

APP = "backup_tasks.celery_app"
DEFAULT_CONCURRENCY = "2"


def _worker_args() -> list[str]:
    # Task events (-E) for Flower and `backupctl status`; INFO logs; a node name that the compose healthcheck
    # addresses (celery@<hostname>). WORKER_CONCURRENCY is read at start, not import (the test harness sets it
    # per worker); empty counts as unset, like the shell's `${WORKER_CONCURRENCY:-2}` that ./worker used.
    concurrency = os.environ.get("WORKER_CONCURRENCY") or DEFAULT_CONCURRENCY
    return ["worker", "-E", "--loglevel=INFO", f"--concurrency={concurrency}", "-n", "celery@%h"]


def _beat_args() -> list[str]:
    # INFO, so Beat logs the schedule it built from BACKUP_CRON (BackupScheduler) and each job it sends.
    return ["beat", "--loglevel=INFO"]


def _flower_args() -> list[str]:
    # Address, port and basic auth come from FLOWER_* (celery_app exports the settings' values for Flower).
    return ["flower"]


DEFAULTS: dict[str, Callable[[], list[str]]] = {
    "worker": _worker_args,
    "beat": _beat_args,
    "flower": _flower_args,
}


def celery_argv(process: str, extra: Sequence[str] = ()) -> list[str]:
    """The `celery` command line that `backup-tasks-<process> EXTRA…` runs."""
    return ["celery", "-A", APP, *DEFAULTS[process](), *extra]


def run(process: str) -> None:
    """Run `celery_argv(process, <this program's arguments>)` in this process; exits with Celery's exit code."""
    # sys.argv is what Celery parses, and what celery_app reads to recognise `flower` (_flower_defaults there):
    # it must be set before Celery imports the app. argv[0] "celery" keeps Celery's usage messages familiar.
    sys.argv = celery_argv(process, sys.argv[1:])
    from celery.__main__ import main as celery_main  # late: sys.argv must be set first

    celery_main()


def worker() -> None:
    run("worker")


def beat() -> None:
    run("beat")


def flower() -> None:
    run("flower")


def metrics() -> None:
    """`backup-tasks-metrics [--address A] [--port N]`: not a Celery process (backup_tasks/metrics)."""
    from .metrics import serve

    raise SystemExit(serve(sys.argv[1:]))
