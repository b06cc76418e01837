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

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.beat import BeatLazyFunc
from celery.schedules import ParseException, crontab

from backup_tasks.errors import ConfigError

SCHEDULED_TASK = "backup_tasks.scheduled_backup"
ENTRY_NAME = "scheduled-backup"
DRILL_TASK = "backup_tasks.scheduled_drill"  # BACKUP_DRILL_CRON, when set (README "Restore drills")
DRILL_ENTRY_NAME = "scheduled-drill"

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


def parse_cron(expression: str, variable: str = "BACKUP_CRON") -> crontab:
    """BACKUP_CRON (or `variable`, e.g. BACKUP_DRILL_CRON) as a crontab; a ConfigError names it and the bad field."""
    text = normalize_cron(expression)
    fields = text.split(" ") if text else []
    hint = CRON_HINT.replace("BACKUP_CRON", variable)
    if len(fields) != 5:
        raise ConfigError(f"{variable}={expression!r} has {len(fields)} field{'s' if len(fields) != 1 else ''}, "
                          f"expected exactly 5", hint=hint)
    # Each field alone first, so the message can say which one is wrong (crontab() reports no field name).
    for (label, keyword, valid), value in zip(CRON_FIELDS, fields, strict=True):
        try:
            crontab(**{keyword: value})
        except (ValueError, ParseException) as exc:
            raise ConfigError(f"{variable}={text!r}: invalid {label} field {value!r} ({exc}); valid: {valid}",
                              hint=hint) from None
    try:
        return crontab.from_string(text)
    except (ValueError, ParseException) as exc:  # pragma: no cover - every field passed on its own
        raise ConfigError(f"{variable}={text!r} is invalid: {exc}", hint=hint) from None


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
        now = now.replace(tzinfo=UTC)
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
                return when.astimezone(UTC)
    raise ConfigError(f"BACKUP_CRON={schedule!r} never fires", hint=CRON_HINT)


def slot_id(slot: datetime) -> str:
    """A slot as it is written in task arguments and Redis keys: UTC, to the minute."""
    return slot.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def current_slot(cron: str, tz: str) -> str:
    """Evaluated by Beat when it sends the job (BeatLazyFunc): the slot Beat is firing for, on Beat's clock."""
    return slot_id(previous_due(cron, datetime.now(UTC), tz))


def build_beat_schedule(settings: Any) -> dict[str, dict[str, Any]]:
    """`beat_schedule` for Celery: the scheduled backup (create -> upload -> cleanup) of every database.

    Without BACKUP_DATABASES_FILE one entry, `scheduled-backup`, as always. With it one entry per database,
    `scheduled-backup:NAME`, on its own cron and time zone, sending its name (never a URL: Beat needs none); a
    `discover = true` server gets one entry whose task sends one scheduled backup per database found on it.
    Raises ConfigError for an invalid cron or time zone (naming the database), so Beat refuses to start.
    """
    if not getattr(settings, "BACKUP_DATABASES_FILE", None):
        entries = {ENTRY_NAME: _entry(settings.BACKUP_CRON, settings.BACKUP_TIMEZONE, None, zoned=False)}
        if getattr(settings, "BACKUP_DRILL_CRON", None):
            entries[DRILL_ENTRY_NAME] = _entry(settings.BACKUP_DRILL_CRON, settings.BACKUP_TIMEZONE, None,
                                               zoned=False, task=DRILL_TASK)
        return entries
    from backup_tasks import databases

    dep = databases.deployment(settings)
    entries = {}
    configs = [(db.name, db.config) for db in dep.databases.values()]
    configs += [(name, databases.effective(settings, name, server.table, name, url=None))
                for name, server in dep.servers.items()]
    drills = {name for name, db in dep.databases.items() if db.config.BACKUP_DRILL_CRON}
    for name, config in configs:
        try:
            entries[f"{ENTRY_NAME}:{name}"] = _entry(config.BACKUP_CRON, config.BACKUP_TIMEZONE, name, zoned=True)
            if name in drills:  # declared databases only: a discovered server has no one scratch schema
                entries[f"{DRILL_ENTRY_NAME}:{name}"] = _entry(config.BACKUP_DRILL_CRON, config.BACKUP_TIMEZONE,
                                                               name, zoned=True, task=DRILL_TASK)
        except ConfigError as exc:
            raise ConfigError(f"database {name} in {dep.file}: {exc.message}", hint=exc.hint) from None
    return entries


def _entry(cron_text: str, tz_text: str, database: str | None, *, zoned: bool,
           task: str = SCHEDULED_TASK) -> dict[str, Any]:
    cron = normalize_cron(cron_text)
    schedule = parse_cron(cron, "BACKUP_DRILL_CRON" if task == DRILL_TASK else "BACKUP_CRON")
    tz_name = str(tz_text).strip() or "UTC"
    parse_timezone(tz_name)
    if zoned:  # each database in its own time zone, whatever the app's (BACKUP_TIMEZONE) is
        schedule = ZonedCrontab.of(schedule, cron, tz_name)
    # The worker claims `slot` once in Redis (SET NX): a second Beat sending the same slot, or a
    # redelivered message, makes no second backup. cron/timezone let it recompute the slot if absent.
    kwargs: dict[str, Any] = {"cron": cron, "timezone": tz_name, "slot": BeatLazyFunc(current_slot, cron, tz_name)}
    if database is not None:
        kwargs["database"] = database
    # Without ZonedCrontab, Celery evaluates crontabs in the app's timezone, which celery_app sets from
    # BACKUP_TIMEZONE.
    return {"task": task, "schedule": schedule, "kwargs": kwargs, "options": {}}


class ZonedCrontab(crontab):
    """A crontab evaluated in its own time zone instead of the app's (one per database)."""

    def __init__(self, *args: Any, zone: str = "UTC", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.zone = zone

    @classmethod
    def of(cls, schedule: crontab, cron: str, zone: str) -> ZonedCrontab:
        minute, hour, day_of_month, month, day_of_week = cron.split(" ")
        return cls(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month,
                   day_of_week=day_of_week, zone=zone)

    @property
    def tz(self) -> ZoneInfo:  # type: ignore[override]
        return parse_timezone(self.zone)

    def __reduce__(self) -> tuple:  # Beat's shelve pickles its entries: keep the zone
        cls, args, kwargs = super().__reduce__()
        return cls, args, {**kwargs, "zone": self.zone}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.zone = state.pop("zone", "UTC")
        super().__setstate__(state)

    def __eq__(self, other: Any) -> bool:
        return super().__eq__(other) and getattr(other, "zone", None) == self.zone

    __hash__ = crontab.__hash__

    def __repr__(self) -> str:
        return f"{super().__repr__()} ({self.zone})"
