"""Jobs: JSON-safe arguments in, core call, JSON-safe dict out.

The same function runs in a Celery task (tasks.py) and in the CLI's `--local` path, so what a user sees
does not depend on where the job ran. Nothing here imports Celery or boto3.
"""

from __future__ import annotations

from typing import Any, Callable

from ..progress import ProgressFn, no_progress

JobFn = Callable[..., dict[str, Any]]
JOBS: dict[str, JobFn] = {}


def job(name: str) -> Callable[[JobFn], JobFn]:
    def register(fn: JobFn) -> JobFn:
        JOBS[name] = fn
        return fn

    return register


def run_job(name: str, kwargs: dict[str, Any], progress: ProgressFn | None = None) -> dict[str, Any]:
    _load()
    return JOBS[name](progress=progress or no_progress, **kwargs)


def _load() -> None:
    # Importing the modules registers their jobs.
    from . import db, storage  # noqa: F401
