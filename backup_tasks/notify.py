"""Telling people: failed jobs as JSON to BACKUP_NOTIFY_WEBHOOK_URL, and a short message through apprise to
BACKUP_NOTIFY_URLS (failures) and BACKUP_NOTIFY_SUCCESS_URLS (successes): Slack, Telegram, e-mail, ntfy, ...

Never a secret in what is sent: the database by name (and name/host/port), the backup by file name, the
error as the job's user-facing message, and every text through dsn.mask once more before it leaves. The
notification URLs themselves carry tokens: they are never logged (only their scheme). A notification that
fails is logged and otherwise ignored: it must not change the job's outcome.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any
from urllib.parse import urlsplit

from . import dsn
from .settings import get_settings
from .units import format_bytes

logger = logging.getLogger(__name__)

TIMEOUT_S = 5.0
BODY_MAX_CHARS = 1500  # a chat message, not a log: long errors are cut


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
        with urllib.request.urlopen(request, timeout=timeout) as response:
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


# --- apprise ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Notice:
    """What one message says about one job."""

    database: str  # its name in this deployment (--db)
    job: str
    ok: bool
    duration_s: float | None = None
    size: int | None = None
    rows: int | None = None
    file: str | None = None
    error: str | None = None
    hint: str | None = None
    target: str | None = None  # "database orders_db on db1:5432"

    def title(self) -> str:
        return dsn.mask(f"backup_tasks: {self.job} of {self.database} {'succeeded' if self.ok else 'FAILED'}")

    def body(self) -> str:
        facts = [f"database: {self.database}" + (f" ({self.target})" if self.target else ""),
                 f"job: {self.job}", f"outcome: {'success' if self.ok else 'failure'}"]
        if self.duration_s is not None:
            facts.append(f"duration: {self.duration_s:.1f} s")
        if self.file:
            facts.append(f"backup: {PurePath(self.file).name}")
        if self.size is not None:
            facts.append(f"size: {format_bytes(self.size)}")
        if self.rows is not None:
            facts.append(f"rows: {self.rows:,}")
        if self.error:
            facts.append(f"error: {self.error}")
        if self.hint:
            facts.append(f"hint: {self.hint}")
        return dsn.mask("\n".join(facts))[:BODY_MAX_CHARS]


def notification_urls(ok: bool) -> str | None:
    s = get_settings()
    value = s.BACKUP_NOTIFY_SUCCESS_URLS if ok else s.BACKUP_NOTIFY_URLS
    text = value.get_secret_value().strip() if value is not None else ""
    return text or None


def send(notice: Notice, urls: str | None = None, timeout: float = TIMEOUT_S) -> bool:
    """Send `notice` to `urls` (default: the setting for its outcome) with apprise. True if every URL took it."""
    urls = urls if urls is not None else notification_urls(notice.ok)
    if not urls:
        return False
    import apprise  # late: only a process that notifies pays for its plugins

    sender = apprise.Apprise()
    if not sender.add(urls):
        schemes = sorted({u.split("://", 1)[0] for u in urls.replace(",", " ").split() if "://" in u})
        logger.error("no usable apprise URL in the notification setting (schemes: %s)", ", ".join(schemes) or "none")
        return False
    kind = apprise.NotifyType.SUCCESS if notice.ok else apprise.NotifyType.FAILURE
    try:
        delivered = bool(sender.notify(body=notice.body(), title=notice.title(), notify_type=kind, timeout=timeout))
    except Exception as exc:  # noqa: BLE001 - a notification never changes the job's outcome
        logger.warning("notification failed: %s", type(exc).__name__)
        return False
    if not delivered:
        logger.warning("notification of %s %s was not delivered to every URL", notice.job, notice.database)
    return delivered
