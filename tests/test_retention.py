"""Golden cases for the retention policy: (backups, policy, now) -> keep, delete, reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backup_tasks.names import make_name
from backup_tasks.retention import (
    NEWEST_VERIFIED,
    NONE_VERIFIED,
    RetentionDecision,
    RetentionPolicy,
    Verified,
    apply_policy,
)
from backup_tasks.settings import load_settings
from backup_tasks.storage.base import BackupInfo

NOW = datetime(2025, 11, 20, 3, 0, 0, tzinfo=UTC)


def backup(when: datetime, seq: int = 0, created_at: datetime | None = None) -> BackupInfo:
    return BackupInfo(name=make_name(when, seq), size=1, created_at=created_at or when)


def daily(first_days_ago: int, last_days_ago: int, hour: int = 2) -> list[BackupInfo]:
    """One backup a day at `hour`:00 UTC, from `first_days_ago` to `last_days_ago` days before NOW."""
    day0 = NOW.replace(hour=hour, minute=0)
    return [backup(day0 - timedelta(days=d)) for d in range(last_days_ago, first_days_ago + 1)]


def names(items: list[BackupInfo]) -> list[str]:
    return [b.name for b in items]


def test_a_week_of_failures_keeps_the_last_good_backup():
    # Backups ran daily until 9 days ago, then every one failed: all are older than 7 days.
    backups = daily(30, 9)
    decision = apply_policy(backups, RetentionPolicy(days=7, min_count=1), NOW)

    assert names(decision.keep) == [make_name(NOW.replace(hour=2) - timedelta(days=9))]
    assert decision.reasons[decision.keep[0].name] == ["newest backup"]
    assert len(decision.delete) == 21


def test_golden_small_case():
    backups = [
        backup(NOW - timedelta(days=10)),
        backup(NOW - timedelta(hours=5)),
        backup(NOW - timedelta(days=3)),
        backup(NOW - timedelta(days=8, hours=1)),
        backup(NOW - timedelta(hours=5), seq=1),
    ]
    decision = apply_policy(backups, RetentionPolicy(days=7, min_count=2), NOW)

    assert decision.to_dict() == {
        "keep": [
            "backup_20251119_220000_1.backup.gz",
            "backup_20251119_220000.backup.gz",
            "backup_20251117_030000.backup.gz",
        ],
        "delete": ["backup_20251112_020000.backup.gz", "backup_20251110_030000.backup.gz"],
        "reasons": {
            "backup_20251119_220000_1.backup.gz": ["newest backup", "within 7 days"],
            "backup_20251119_220000.backup.gz": ["one of the newest 2", "within 7 days"],
            "backup_20251117_030000.backup.gz": ["within 7 days"],
            "backup_20251112_020000.backup.gz": ["older than 7 days (8 days old), kept by no rule"],
            "backup_20251110_030000.backup.gz": ["older than 7 days (10 days old), kept by no rule"],
        },
        "ignored": [],
    }


def test_min_count_keeps_the_newest_n_whatever_their_age():
    backups = daily(60, 20)
    decision = apply_policy(backups, RetentionPolicy(days=7, min_count=3), NOW)
    assert names(decision.keep) == names(sorted(backups, key=lambda b: b.name, reverse=True)[:3])


def test_nothing_is_deleted_within_the_window():
    backups = daily(6, 0)
    decision = apply_policy(backups, RetentionPolicy(days=7), NOW)
    assert decision.delete == [] and len(decision.keep) == 7


def test_age_comes_from_the_name_not_the_file_time():
    # Copied yesterday (fresh mtime / created_at), but the backup itself is 30 days old.
    old = backup(NOW - timedelta(days=30), created_at=NOW - timedelta(days=1))
    new = backup(NOW - timedelta(hours=1))
    decision = apply_policy([old, new], RetentionPolicy(days=7), NOW)
    assert names(decision.delete) == [old.name]


def test_foreign_objects_are_never_candidates():
    foreign = [
        BackupInfo(name="notes.txt", size=1, created_at=NOW - timedelta(days=400)),
        BackupInfo(name="backup_latest.backup.gz", size=1, created_at=NOW - timedelta(days=400)),
        BackupInfo(name=f"old/{make_name(NOW - timedelta(days=400))}", size=1, created_at=NOW - timedelta(days=400)),
    ]
    good = daily(20, 10)
    decision = apply_policy(foreign + good, RetentionPolicy(days=7), NOW)

    assert decision.ignored == [f.name for f in foreign]
    assert not set(decision.ignored) & set(names(decision.keep) + names(decision.delete))
    assert not set(decision.ignored) & set(decision.reasons)


def test_gfs_keeps_the_newest_of_each_day_week_and_month():
    # Every 6 hours for 120 days, nothing recent enough for the day window.
    backups = [backup(NOW - timedelta(hours=6 * i)) for i in range(4 * 120)]
    policy = RetentionPolicy(days=0, min_count=1, keep_daily=7, keep_weekly=4, keep_monthly=3)
    decision = apply_policy(backups, policy, NOW)

    reasons = decision.reasons

    def kept_by(label: str) -> list[str]:
        return [n for n in names(decision.keep) if any(r.startswith(label) for r in reasons[n])]

    daily_kept, weekly_kept, monthly_kept = kept_by("daily"), kept_by("weekly"), kept_by("monthly")
    assert (len(daily_kept), len(weekly_kept), len(monthly_kept)) == (7, 4, 3)
    # The newest of each calendar day: NOW (03:00) for the 20th, then 21:00 for each earlier day.
    assert daily_kept[0] == make_name(NOW)
    assert daily_kept[1:] == [make_name(NOW.replace(hour=21) - timedelta(days=d)) for d in range(1, 7)]
    assert monthly_kept == [make_name(NOW), "backup_20251031_210000.backup.gz", "backup_20250930_210000.backup.gz"]
    # ISO weeks start on Monday: 2025-11-16 is a Sunday, so the second weekly backup is that day's last.
    assert weekly_kept[:2] == [make_name(NOW), "backup_20251116_210000.backup.gz"]
    assert len(decision.keep) == len(set(daily_kept + weekly_kept + monthly_kept))
    assert len(decision.keep) + len(decision.delete) == len(backups)


def test_gfs_counts_only_days_that_have_backups():
    # Backups stopped 30 days ago: keep_daily=3 still keeps three (restic's rule), not zero.
    backups = daily(40, 30)
    decision = apply_policy(backups, RetentionPolicy(days=7, keep_daily=3), NOW)
    assert len(decision.keep) == 3


def test_every_backup_has_a_reason():
    backups = daily(30, 0)
    decision = apply_policy(backups, RetentionPolicy(days=7, keep_weekly=2), NOW)
    assert set(decision.reasons) == set(names(backups))
    assert all(decision.reasons[n] for n in names(backups))
    assert isinstance(decision, RetentionDecision)


def test_naive_now_is_utc():
    backups = daily(10, 0)
    aware = apply_policy(backups, RetentionPolicy(), NOW)
    naive = apply_policy(backups, RetentionPolicy(), NOW.replace(tzinfo=None))
    assert aware == naive


def test_empty_input():
    empty = {"keep": [], "delete": [], "reasons": {}, "ignored": []}
    assert apply_policy([], RetentionPolicy(), NOW).to_dict() == empty


def test_min_count_is_at_least_one():
    with pytest.raises(ValueError):
        RetentionPolicy(min_count=0)


def test_policy_from_settings():
    s = load_settings(
        BACKUP_RETENTION_DAYS=14,
        BACKUP_RETENTION_MIN_COUNT=2,
        BACKUP_KEEP_DAILY=7,
        BACKUP_KEEP_WEEKLY=4,
        BACKUP_KEEP_MONTHLY=12,
        env_file=None,
    )
    assert RetentionPolicy.from_settings(s) == RetentionPolicy(14, 2, 7, 4, 12)


# --- the newest backup whose checksum verifies (issue 13 item 7) -------------------------------------------------


def test_a_week_of_corrupt_backups_never_deletes_the_last_one_that_verifies():
    # Daily backups until 24 days ago verify; the week after them (23..17 days ago) does not.
    good = daily(40, 24)  # newest first, as in every listing
    bad = daily(23, 17)
    failed = {b.name: "SHA-256 differs from the recorded one" for b in bad}
    verified = Verified(newest=good[0].name, failed=failed)

    decision = apply_policy(good + bad, RetentionPolicy(days=7, min_count=1), NOW, verified)

    assert names(decision.keep) == [bad[0].name, good[0].name]
    assert decision.reasons[good[0].name] == [NEWEST_VERIFIED]
    assert decision.reasons[bad[0].name] == ["newest backup", f"checksum does not verify: {failed[bad[0].name]}"]
    # A failed check is a note on the decision, never a reason to keep.
    assert decision.reasons[bad[-1].name] == ["older than 7 days (23 days old), kept by no rule",
                                              "checksum does not verify: SHA-256 differs from the recorded one"]
    assert len(decision.delete) == len(good) - 1 + len(bad) - 1


def test_the_newest_backup_that_verifies_may_also_be_kept_by_other_rules():
    backups = daily(3, 0)
    decision = apply_policy(backups, RetentionPolicy(days=7), NOW, Verified(newest=backups[0].name))
    assert decision.reasons[backups[0].name] == ["newest backup", NEWEST_VERIFIED, "within 7 days"]
    assert decision.delete == []


def test_nothing_is_deleted_when_no_backup_verifies():
    backups = daily(60, 20)
    failed = {b.name: "no SHA-256 recorded" for b in backups}
    decision = apply_policy(backups, RetentionPolicy(days=7, min_count=2), NOW, Verified(newest=None, failed=failed))

    assert decision.delete == [] and len(decision.keep) == len(backups)
    newest, third = names(backups)[0], names(backups)[2]  # daily() lists newest first
    assert decision.reasons[newest] == ["newest backup", "checksum does not verify: no SHA-256 recorded"]
    assert decision.reasons[third] == [NONE_VERIFIED, "checksum does not verify: no SHA-256 recorded"]


def test_a_verified_name_that_is_not_among_the_backups_deletes_nothing():
    backups = daily(30, 20)
    decision = apply_policy(backups, RetentionPolicy(days=7), NOW, Verified(newest=make_name(NOW)))
    assert decision.delete == []


def test_without_verification_the_calendar_rules_alone_apply():
    backups = daily(30, 9)
    assert apply_policy(backups, RetentionPolicy(), NOW) == apply_policy(backups, RetentionPolicy(), NOW, None)
    assert Verified("x", {"y": "z"}).to_dict() == {"newest": "x", "failed": {"y": "z"}}
