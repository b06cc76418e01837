"""Retention as a pure function: (backups, policy, now) -> keep, delete and the reasons for each.

No I/O here: the cleanup job lists a storage, asks apply_policy, and deletes what it says, so a dry run is
just not doing the last step, and every decision can be explained.

Rules (a backup is kept if any rule keeps it):
- the newest `min_count` backups are always kept, whatever their age (min_count >= 1, so if backups have been
  failing for a week, the last good one still stays);
- backups created within the last `days` days are kept;
- grandfather-father-son: the newest backup of each of the newest `keep_daily` days, `keep_weekly` ISO weeks
  and `keep_monthly` months that have a backup (as restic counts: days without a backup do not use up a slot).
Age and calendar buckets come from the creation time in the backup's name (UTC), never from a file's mtime.
Anything whose name is not a backup of this tool is never a candidate: it goes to `ignored`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from .names import parse_name
from .storage.base import BackupInfo


@dataclass(frozen=True)
class RetentionPolicy:
    days: int = 7
    min_count: int = 1
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0

    def __post_init__(self) -> None:
        if self.min_count < 1:
            raise ValueError("min_count must be at least 1: the newest backup is never deleted")
        if min(self.days, self.keep_daily, self.keep_weekly, self.keep_monthly) < 0:
            raise ValueError("retention counts must not be negative")

    @classmethod
    def from_settings(cls, s: Any) -> RetentionPolicy:
        return cls(
            days=s.BACKUP_RETENTION_DAYS,
            min_count=s.BACKUP_RETENTION_MIN_COUNT,
            keep_daily=s.BACKUP_KEEP_DAILY,
            keep_weekly=s.BACKUP_KEEP_WEEKLY,
            keep_monthly=s.BACKUP_KEEP_MONTHLY,
        )

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RetentionDecision:
    keep: list[BackupInfo]  # newest first
    delete: list[BackupInfo]  # newest first
    reasons: dict[str, list[str]]  # every kept or deleted name -> why
    ignored: list[str] = field(default_factory=list)  # not backups of this tool: never touched

    def to_dict(self) -> dict[str, Any]:
        return {
            "keep": [b.name for b in self.keep],
            "delete": [b.name for b in self.delete],
            "reasons": self.reasons,
            "ignored": self.ignored,
        }


_GFS: list[tuple[str, str, Callable[[datetime], str]]] = [
    ("keep_daily", "daily", lambda t: t.strftime("%Y-%m-%d")),
    ("keep_weekly", "weekly", lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2])),
    ("keep_monthly", "monthly", lambda t: t.strftime("%Y-%m")),
]


def apply_policy(backups: list[BackupInfo], policy: RetentionPolicy, now: datetime) -> RetentionDecision:
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    candidates, ignored = [], []
    for b in backups:
        parsed = parse_name(b.name)
        if parsed is None:
            ignored.append(b.name)
        else:
            candidates.append((parsed, b))
    candidates.sort(key=lambda c: c[0], reverse=True)  # newest first; the sequence breaks same-second ties
    reasons: dict[str, list[str]] = {b.name: [] for _, b in candidates}

    for i, (_, b) in enumerate(candidates[: policy.min_count]):
        reasons[b.name].append("newest backup" if i == 0 else f"one of the newest {policy.min_count}")

    cutoff = now - timedelta(days=policy.days)
    for (created, _), b in candidates:
        if created >= cutoff:
            reasons[b.name].append(f"within {policy.days} days")

    for attr, label, bucket_of in _GFS:
        limit, seen = getattr(policy, attr), set()
        for (created, _), b in candidates:
            if len(seen) >= limit:
                break
            bucket = bucket_of(created)
            if bucket not in seen:
                seen.add(bucket)
                reasons[b.name].append(f"{label} {bucket} ({len(seen)}/{limit})")

    keep, delete = [], []
    for (created, _), b in candidates:
        if reasons[b.name]:
            keep.append(b)
        else:
            delete.append(b)
            reasons[b.name].append(f"older than {policy.days} days ({_age(now - created)} old), kept by no rule")
    return RetentionDecision(keep=keep, delete=delete, reasons=reasons, ignored=ignored)


def _age(delta: timedelta) -> str:
    if delta.days >= 1:
        return f"{delta.days} day{'s' if delta.days != 1 else ''}"
    return f"{int(delta.total_seconds() // 3600)} h"
