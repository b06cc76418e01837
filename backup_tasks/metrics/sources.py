"""What the metrics read besides the job outcomes in Redis: the storages' listings and the newest drill report,
each kept for BACKUP_METRICS_CACHE_S, so a scrape every 15 s of a bucket of thousands of backups costs one
listing a minute (ListObjectsV2, 1,000 keys a request), not one per scrape."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..databases import Database
from ..errors import BackupError
from ..storage.base import BackupInfo, Storage
from ..storage.factory import local_storage, s3_storage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DrillFacts:
    backup: str
    ok: bool | None
    finished: float | None  # Unix time


@dataclass(frozen=True)
class LocationFacts:
    """One location of one database, as of its last listing."""

    location: str
    count: int = 0
    newest_created: float | None = None  # Unix time, from the newest backup's name
    newest_size: int | None = None
    drill: DrillFacts | None = None
    error: str | None = None  # the listing failed: why (the metrics say so instead of showing stale numbers)


class TTLCache:
    """Values by key, each computed at most once per `ttl_s` (concurrent scrapes wait for one computation)."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self.ttl_s, self.clock = ttl_s, clock
        self._values: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        with self._lock:  # one lock for all: listings are rare, and a second scrape should reuse the first's
            hit = self._values.get(key)
            if hit is not None and hit[0] > self.clock():
                return hit[1]
            value = compute()
            self._values[key] = (self.clock() + self.ttl_s, value)
            return value


def locations(db: Database) -> list[tuple[str, Callable[[], Storage]]]:
    """(kind, how to build it): an S3 client costs ~0.3 s to build, so it is built only when a listing is due."""
    out: list[tuple[str, Callable[[], Storage]]] = [("local", lambda: local_storage(db.config))]
    if db.config.s3_enabled:
        out.append(("s3", lambda: s3_storage(db.config)))
    return out


def location_facts(storage: Storage) -> LocationFacts:
    try:
        backups = storage.list()  # newest first; one listing, no HEAD per backup
    except BackupError as exc:
        logger.warning("metrics: cannot list %s: %s", storage.location(), exc.message)
        return LocationFacts(storage.kind, error=exc.message)
    newest = next((b for b in backups if b.size), None)
    return LocationFacts(storage.kind, len(backups), newest.created_at.timestamp() if newest else None,
                         newest.size if newest else None, newest_drill(storage, backups))


def newest_drill(storage: Storage, backups: list[BackupInfo]) -> DrillFacts | None:
    """The report next to the newest backup that has one (the listing shows which do): one GET."""
    drilled = next((b for b in backups if "drill" in b.sidecars), None)
    if drilled is None:
        return None
    try:
        data = storage.get_sidecar(drilled.name, "drill")
        report = json.loads(data) if data else None
    except (BackupError, ValueError) as exc:
        logger.warning("metrics: drill report of %s unreadable: %s", drilled.name, exc)
        return DrillFacts(drilled.name, None, None)
    return DrillFacts(drilled.name, *drill_outcome(report)) if isinstance(report, dict) else None


def drill_outcome(report: dict[str, Any]) -> tuple[bool | None, float | None]:
    """(passed, finished as Unix time) from a drill report (models.DrillReport, written by jobs/drill.py: `ok`
    and `finished_at`); None where the report does not say."""
    ok = report.get("ok")
    return (ok if isinstance(ok, bool) else None), _unix(report.get("finished_at"))


def _unix(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
