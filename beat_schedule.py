"""Celery Beat's schedule, built from the settings: BACKUP_CRON (5-field cron) in BACKUP_TIMEZONE.

Pure functions, no broker: `build_beat_schedule(settings)` returns the dict Celery wants as `beat_schedule`,
`parse_cron` turns BACKUP_CRON into a crontab (or a ConfigError naming the variable and the bad field), and
`previous_due` gives the schedule slot a run belongs to (the most recent due time <= now), which the
scheduled_backup task claims in Redis so two Beats or a redelivery never make two backups for one slot.

Retention is not a separate entry: the scheduled job is create -> upload (when S3 is configured) -> cleanup,
and cleanup applies BACKUP_RETENTION_* / BACKUP_KEEP_* as the worker's settings say.

Lives in the repository root, where the design puts it, and is installed as a top-level module beside the
package (pyproject.toml's py-modules): backup_tasks.celery_app imports it in a checkout and from a wheel alike.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.beat import BeatLazyFunc
from celery.schedules import ParseException, crontab

from backup_tasks.errors import ConfigError

SCHEDULED_TASK = "backup_tasks.scheduled_backup"
ENTRY_NAME = "scheduled-backup"

# BACKUP_CRON's fields in order, with the crontab() keyword each becomes and what a user may write there.
CRON_FIELDS = (
    ("minute", "minute", "0-59"),
    ("hour", "hour", "0-23"),
    ("day of month", "day_of_month", "1-31"),
    ("month", "month_of_year", "1-12 or jan-dec"),
    ("day of week", "day_of_week", "0-6 (0 = Sunday) or sun-sat"),
)
CRON_HINT = "BACKUP_CRON is 5 fields: minute hour day-of-month month day-of-week, e.g. '0 2 * * *' (02:00 daily)."
# How far back previous_due looks before deciding a schedule never fires (Feb 29 on a given weekday: 28 years).
_MAX_DAYS_BACK = 366 * 29


def normalize_cron(expression: str) -> str:
    """Collapse runs of spaces and tabs (crontab.from_string splits on single spaces) and trim."""
    return " ".join(str(expression).split())


def parse_cron(expression: str) -> crontab:
    """BACKUP_CRON as a crontab; a ConfigError names BACKUP_CRON and the bad field."""
    text = normalize_cron(expression)
    fields = text.split(" ") if text else []
    if len(fields) != 5:
        raise ConfigError(f"BACKUP_CRON={expression!r} has {len(fields)} field{'s' if len(fields) != 1 else ''}, "
                          f"expected exactly 5", hint=CRON_HINT)
    # Each field alone first, so the message can say which one is wrong (crontab() reports no field name).
    for (label, keyword, valid), value in zip(CRON_FIELDS, fields):
        try:
            crontab(**{keyword: value})
        except (ValueError, ParseException) as exc:
            raise ConfigError(f"BACKUP_CRON={text!r}: invalid {label} field {value!r} ({exc}); valid: {valid}",
                              hint=CRON_HINT) from None
    try:
        return crontab.from_string(text)
    except (ValueError, ParseException) as exc:  # pragma: no cover - every field passed on its own
        raise ConfigError(f"BACKUP_CRON={text!r} is invalid: {exc}", hint=CRON_HINT) from None


def parse_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(str(name).strip() or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"BACKUP_TIMEZONE={name!r} is not a known time zone",
                          hint="Use an IANA name such as UTC or Europe/Berlin.") from None


def _day_matches(schedule: crontab, day: date) -> bool:
    # Celery's semantics (not Vixie cron's): month, day of month and day of week must all match.
    return (day.month in schedule.month_of_year and day.day in schedule.day_of_month
            and (day.weekday() + 1) % 7 in schedule.day_of_week)


def previous_due(schedule: crontab | str, now: datetime, tz: ZoneInfo | str = "UTC") -> datetime:
    """The most recent time <= now (to the minute) at which `schedule` is due in `tz`, as an aware UTC datetime."""
    if isinstance(schedule, str):
        schedule = parse_cron(schedule)
    if isinstance(tz, str):
        tz = parse_timezone(tz)
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    local = now.astimezone(tz).replace(second=0, microsecond=0)
    hours = sorted(schedule.hour, reverse=True)
    minutes = sorted(schedule.minute, reverse=True)
    for back in range(_MAX_DAYS_BACK):
        day = local.date() - timedelta(days=back)
        if not _day_matches(schedule, day):
            continue
        for hour in hours:
            if back == 0 and hour > local.hour:
                continue
            for minute in minutes:
                if back == 0 and hour == local.hour and minute > local.minute:
                    continue
                when = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
                return when.astimezone(timezone.utc)
    raise ConfigError(f"BACKUP_CRON={schedule!r} never fires", hint=CRON_HINT)


def slot_id(slot: datetime) -> str:
    """A slot as it is written in task arguments and Redis keys: UTC, to the minute."""
    return slot.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def current_slot(cron: str, tz: str) -> str:
    """Evaluated by Beat when it sends the job (BeatLazyFunc): the slot Beat is firing for, on Beat's clock."""
    return slot_id(previous_due(cron, datetime.now(timezone.utc), tz))


def build_beat_schedule(settings: Any) -> dict[str, dict[str, Any]]:
    """`beat_schedule` for Celery: one entry, the scheduled backup (create -> upload -> cleanup).

    Raises ConfigError for an invalid BACKUP_CRON or BACKUP_TIMEZONE, so Beat refuses to start.
    """
    cron = normalize_cron(settings.BACKUP_CRON)
    schedule = parse_cron(cron)
    tz_name = str(settings.BACKUP_TIMEZONE).strip() or "UTC"
    parse_timezone(tz_name)
    return {
        ENTRY_NAME: {
            "task": SCHEDULED_TASK,
            # Celery evaluates crontabs in the app's timezone, which celery_app sets from BACKUP_TIMEZONE.
            "schedule": schedule,
            # The worker claims `slot` once in Redis (SET NX): a second Beat sending the same slot, or a
            # redelivered message, makes no second backup. cron/timezone let it recompute the slot if absent.
            "kwargs": {"cron": cron, "timezone": tz_name, "slot": BeatLazyFunc(current_slot, cron, tz_name)},
            "options": {},
        }
    }
