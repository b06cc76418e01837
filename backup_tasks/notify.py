"""Failed jobs are POSTed as JSON to BACKUP_NOTIFY_WEBHOOK_URL (when set), so silence is not the only signal.

Standard library only, a short timeout, and never a secret in the body: the database by name only, the
backup by file name only, the error as the job's user-facing message (URLs in it are already masked).
A webhook that fails is logged and otherwise ignored: it must not change the job's outcome.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from pathlib import PurePath
from typing import Any
from urllib.parse import urlsplit

from .settings import get_settings

logger = logging.getLogger(__name__)

TIMEOUT_S = 5.0


def failure_payload(*, job: str, database: str | None, error: str, file: str | None,
                    task_id: str | None = None, status: str = "failed") -> dict[str, Any]:
    return {
        "job": job,
        "database": database,
        "status": status,
        "error": error,
        "file": PurePath(file).name if file else None,
        "task_id": task_id,
    }


def post_json(url: str, payload: dict[str, Any], timeout: float = TIMEOUT_S) -> bool:
    parts = urlsplit(url)
    where = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"  # no path: may hold a token
    if parts.scheme not in ("http", "https"):
        logger.error("BACKUP_NOTIFY_WEBHOOK_URL must be http(s); not notifying (%s)", parts.scheme or "no scheme")
        return False
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "backup_tasks"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (scheme checked above)
            response.read(1024)
        return True
    except Exception as exc:  # noqa: BLE001 - any failure of the webhook is logged, never raised
        logger.warning("webhook POST to %s failed: %s", where, type(exc).__name__)
        return False


def notify_failure(**fields: Any) -> bool:
    """POST a failure (see failure_payload) when BACKUP_NOTIFY_WEBHOOK_URL is set. True if it was delivered."""
    url = get_settings().BACKUP_NOTIFY_WEBHOOK_URL
    if url is None or not url.get_secret_value():
        return False
    return post_json(url.get_secret_value(), failure_payload(**fields))
