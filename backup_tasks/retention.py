"""Retention as a pure function: (backups, policy, now) -> keep, delete and the reasons for each.

No I/O here: the cleanup job lists a storage, asks apply_policy, and deletes what it says, so a dry run is
just not doing the last step, and every decision can be explained.

Rules (a backup is kept if any rule keeps it):
- the newest backup whose checksum verifies is always kept: the cleanup job checks checksums newest-first, stops
  at the first that verifies, and passes what it found as `verified` (a week of truncated or corrupt files never
  deletes the last one that restores). When no backup verifies, nothing is deleted at all: which of them would
  restore is unknown, and deleting is the one step that cannot be undone;
- the newest `min_count` backups are always kept, whatever their age (min_count >= 1);
- backups created within the last `days` days are kept;
- grandfather-father-son: the newest backup of each of the newest `keep_daily` days, `keep_weekly` ISO weeks
  and `keep_monthly` months that have a backup (as restic counts: days without a backup do not use up a slot).
Age and calendar buckets come from the creation time in the backup's name (UTC), never from a file's mtime.
Anything whose name is not a backup of this tool is never a candidate: it goes to `ignored`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

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
class Verified:
    """What the cleanup job found checking checksums newest-first: the newest backup whose checksum verifies (None:
    none does), and why each newer one did not. The checking is I/O, so it happens outside apply_policy."""

    newest: str | None
    failed: dict[str, str] = field(default_factory=dict)  # newer backups that did not verify -> why

    def to_dict(self) -> dict[str, Any]:
        return {"newest": self.newest, "failed": self.failed}


NEWEST_VERIFIED = "newest backup whose checksum verifies"
NONE_VERIFIED = "no backup's checksum verifies: nothing is deleted until one does"


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


def apply_policy(backups: list[BackupInfo], policy: RetentionPolicy, now: datetime,
                 verified: Verified | None = None) -> RetentionDecision:
    """Keep, delete and why. `verified` is what the caller learned about checksums; None means they were not
    checked (the calendar rules alone, for tests and what-ifs): a caller that deletes passes it."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    candidates, ignored = [], []
    for b in backups:
        parsed = parse_name(b.name)
        if parsed is None:
            ignored.append(b.name)
        else:
            candidates.append((parsed, b))
    candidates.sort(key=lambda c: c[0], reverse=True)  # newest first; the sequence breaks same-second ties
    reasons = _keep_reasons(candidates, policy, now, verified)

    keep, delete = [], []
    for (created, _), b in candidates:
        if reasons[b.name]:
            keep.append(b)
        else:
            delete.append(b)
            reasons[b.name].append(f"older than {policy.days} days ({_age(now - created)} old), kept by no rule")
        if verified is not None and b.name in verified.failed:  # a note, never a reason to keep
            reasons[b.name].append(f"checksum does not verify: {verified.failed[b.name]}")
    return RetentionDecision(keep=keep, delete=delete, reasons=reasons, ignored=ignored)


def _keep_reasons(candidates: list, policy: RetentionPolicy, now: datetime,
                  verified: Verified | None) -> dict[str, list[str]]:
    reasons: dict[str, list[str]] = {b.name: [] for _, b in candidates}
    for i, (_, b) in enumerate(candidates[: policy.min_count]):
        reasons[b.name].append("newest backup" if i == 0 else f"one of the newest {policy.min_count}")
    good = verified is not None and verified.newest in reasons
    if good:
        reasons[verified.newest].append(NEWEST_VERIFIED)

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

    if verified is not None and not good:  # none verifies (or the one named is not among these backups)
        for names in reasons.values():
            if not names:
                names.append(NONE_VERIFIED)
    return reasons


def _age(delta: timedelta) -> str:
    if delta.days >= 1:
        return f"{delta.days} day{'s' if delta.days != 1 else ''}"
    return f"{int(delta.total_seconds() // 3600)} h"
