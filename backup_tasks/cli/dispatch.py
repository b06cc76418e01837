"""Where a job runs: in this process (--local) or on a Celery worker (the default once the queue exists)."""

from __future__ import annotations

from typing import Any

from .progressbar import ProgressBar


def run_local(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    from ..jobs import run_job

    bar = ProgressBar()
    try:
        return run_job(name, kwargs, progress=bar)
    finally:
        bar.close()


def dispatch(name: str, kwargs: dict[str, Any], *, local: bool, no_wait: bool = False) -> dict[str, Any] | None:
    # Until the Celery client lands (issue 4) every job runs in-process.
    return run_local(name, kwargs)
