"""beat_schedule.py: BACKUP_CRON parsing (whitespace, fields, errors naming the variable and the field), the
schedule slot a run belongs to, and the schedule Beat gets; Beat refuses to start on an invalid BACKUP_CRON."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from celery.beat import BeatLazyFunc
from celery.schedules import crontab

from backup_tasks.celery_app import load_beat_schedule_module
from backup_tasks.errors import ConfigError, ExitCode
from tests.celery_worker import CELERY, ROOT

bs = load_beat_schedule_module()
UTC = UTC


def settings(cron: str = "0 2 * * *", tz: str = "UTC") -> SimpleNamespace:
    return SimpleNamespace(BACKUP_CRON=cron, BACKUP_TIMEZONE=tz)


@pytest.mark.parametrize("text, minute, hour, dow", [
    ("0 2 * * *", {0}, {2}, set(range(7))),
    ("  0   2 *\t* *  ", {0}, {2}, set(range(7))),  # runs of spaces and tabs are one separator
    ("*/15 1-3 * * mon-fri", {0, 15, 30, 45}, {1, 2, 3}, {1, 2, 3, 4, 5}),
    ("5,35 0 1 jan,jul sun", {5, 35}, {0}, {0}),
])
def test_valid_cron_strings(text, minute, hour, dow):
    c = bs.parse_cron(text)
    assert isinstance(c, crontab)
    assert c.minute == minute and c.hour == hour and c.day_of_week == dow


@pytest.mark.parametrize("text, field", [
    ("61 2 * * *", "minute"),
    ("0 24 * * *", "hour"),
    ("0 2 0 * *", "day of month"),
    ("0 2 32 * *", "day of month"),
    ("0 2 * 13 *", "month"),
    ("0 2 * * 8", "day of week"),
    ("*/0 2 * * *", "minute"),
    ("x 2 * * *", "minute"),
    ("0 2,,3 * * *", "hour"),
])
def test_an_invalid_field_is_named_with_the_variable(text, field):
    with pytest.raises(ConfigError) as info:
        bs.parse_cron(text)
    assert "BACKUP_CRON" in info.value.message and f"invalid {field} field" in info.value.message
    assert info.value.exit_code == ExitCode.USAGE and "5 fields" in info.value.hint


@pytest.mark.parametrize("text, count", [("", 0), ("0 2 * *", 4), ("0 2 * * * *", 6), ("@daily", 1)])
def test_the_field_count_must_be_five(text, count):
    with pytest.raises(ConfigError, match=rf"BACKUP_CRON=.* has {count} fields?, expected exactly 5"):
        bs.parse_cron(text)


def test_an_unknown_timezone_is_refused():
    with pytest.raises(ConfigError, match="BACKUP_TIMEZONE='Mars/Olympus' is not a known time zone"):
        bs.build_beat_schedule(settings(tz="Mars/Olympus"))


@pytest.mark.parametrize("cron, now, tz, slot", [
    ("0 2 * * *", datetime(2025, 11, 5, 2, 0, 0, tzinfo=UTC), "UTC", datetime(2025, 11, 5, 2, 0, tzinfo=UTC)),
    ("0 2 * * *", datetime(2025, 11, 5, 2, 0, 59, 999, tzinfo=UTC), "UTC", datetime(2025, 11, 5, 2, 0, tzinfo=UTC)),
    ("0 2 * * *", datetime(2025, 11, 5, 1, 59, 59, tzinfo=UTC), "UTC", datetime(2025, 11, 4, 2, 0, tzinfo=UTC)),
    ("* * * * *", datetime(2025, 11, 5, 13, 7, 31, tzinfo=UTC), "UTC", datetime(2025, 11, 5, 13, 7, tzinfo=UTC)),
    ("*/15 * * * *", datetime(2025, 11, 5, 13, 14, tzinfo=UTC), "UTC", datetime(2025, 11, 5, 13, 0, tzinfo=UTC)),
    # Monday-Friday at 02:00: on Sunday the slot is Friday's (2025-11-09 is a Sunday).
    ("0 2 * * mon-fri", datetime(2025, 11, 9, 12, 0, tzinfo=UTC), "UTC", datetime(2025, 11, 7, 2, 0, tzinfo=UTC)),
    # 02:00 in Berlin (UTC+1 in November) is 01:00 UTC.
    ("0 2 * * *", datetime(2025, 11, 5, 1, 30, tzinfo=UTC), "Europe/Berlin", datetime(2025, 11, 5, 1, 0, tzinfo=UTC)),
    # Day of month and day of week must both match (Celery's rule): 13th that is a Friday.
    ("0 0 13 * fri", datetime(2025, 7, 1, tzinfo=UTC), "UTC", datetime(2025, 6, 13, 0, 0, tzinfo=UTC)),
])
def test_previous_due_is_the_latest_due_time_not_after_now(cron, now, tz, slot):
    assert bs.previous_due(cron, now, tz) == slot


def test_slot_ids_are_utc_minutes():
    assert bs.slot_id(datetime(2025, 11, 5, 3, 0, 42, tzinfo=UTC)) == "2025-11-05T03:00Z"


def test_build_beat_schedule_is_one_entry_with_a_lazy_slot():
    schedule = bs.build_beat_schedule(settings("  30\t4 * * *", "Europe/Berlin"))
    assert list(schedule) == ["scheduled-backup"]
    entry = schedule["scheduled-backup"]
    assert entry["task"] == "backup_tasks.scheduled_backup"
    assert entry["schedule"].minute == {30} and entry["schedule"].hour == {4}
    kwargs = entry["kwargs"]
    assert kwargs["cron"] == "30 4 * * *" and kwargs["timezone"] == "Europe/Berlin"
    assert isinstance(kwargs["slot"], BeatLazyFunc)
    expected = bs.slot_id(bs.previous_due("30 4 * * *", datetime.now(UTC), "Europe/Berlin"))
    assert kwargs["slot"]() == expected  # evaluated by Beat when it sends the job


def test_celery_config_takes_the_timezone_and_limits_from_settings(monkeypatch):
    from backup_tasks.celery_app import celery_config
    from backup_tasks.settings import load_settings

    monkeypatch.setenv("BACKUP_TIMEZONE", "Europe/Berlin")
    monkeypatch.setenv("CELERY_TASK_TIME_LIMIT", "1000")
    monkeypatch.setenv("CELERY_TASK_SOFT_TIME_LIMIT", "900")
    conf = celery_config(load_settings(None))
    assert conf["timezone"] == "Europe/Berlin"
    assert conf["task_time_limit"] == 1000 and conf["task_soft_time_limit"] == 900
    assert conf["broker_transport_options"]["visibility_timeout"] > 2 * 1000
    assert conf["result_backend_transport_options"]["visibility_timeout"] > 1000
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == conf["result_serializer"] == "json"
    assert conf["worker_prefetch_multiplier"] == 1 and conf["task_track_started"]


def test_beat_refuses_to_start_with_an_invalid_backup_cron(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "BACKUP_CRON": "0 25 * * *", "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
           "CELERY_RESULT_BACKEND": "redis://127.0.0.1:1/0", "HOME": str(tmp_path)}
    proc = subprocess.run([CELERY, "-A", "backup_tasks.celery_app", "beat", "--schedule", str(tmp_path / "s")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == int(ExitCode.USAGE), proc.stdout + proc.stderr
    assert "Error: BACKUP_CRON='0 25 * * *': invalid hour field '25'" in proc.stderr
