"""The scheduled backup of one database (create -> upload when S3 is configured -> cleanup), at most once per
schedule slot; for a discovering server, one scheduled backup per database found on it. The scheduled restore
drill of one database (BACKUP_DRILL_CRON), at most once per slot of its own.

What the Celery task (tasks.scheduled_backup) hands in: its id, how it retries a storage step in the task, how it
writes a parallel backup's parts and how it sends a task; nothing here imports Celery.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import databases, dsn, queue_state
from .celery_app import load_beat_schedule_module
from .errors import UsageError
from .jobs import run_job
from .jobs.results import ScheduledBackupResult, ScheduledDrillResult
from .progress import ProgressFn

logger = logging.getLogger(__name__)
SLOT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}Z$")


def slot_of(cron: str | None, tz: str | None, slot: str | None, db: databases.Database,
            default_cron: str | None = None) -> str:
    """The slot Beat sent, checked; without one, the latest due time of the database's cron (a manual run)."""
    if slot is not None:
        if not isinstance(slot, str) or not SLOT_RE.match(slot):
            raise UsageError(f"invalid schedule slot {slot!r}", hint="A slot looks like 2025-11-01T02:00Z.")
        return slot
    schedule = load_beat_schedule_module()
    due = schedule.previous_due(cron or default_cron or db.config.BACKUP_CRON, datetime.now(UTC),
                                tz or db.config.BACKUP_TIMEZONE)
    return schedule.slot_id(due)


def target_name(db: databases.Database) -> str | None:
    try:
        return dsn.parse(db.url).name or None
    except Exception:  # noqa: BLE001 - only for the report
        return None


@dataclass
class ScheduledRun:
    task_id: str
    retry: Callable[[Callable[[], dict], str], dict]  # tasks.retried_in_task
    part_runner: Callable[..., Any]
    send: Callable[[dict[str, Any]], Any]  # enqueue a scheduled backup with these kwargs

    def run(self, info: dict[str, Any], progress: ProgressFn, database: str | None, cron: str | None,
            tz: str | None, slot: str | None) -> dict[str, Any]:
        """One database's scheduled backup; for a server's name (discover = true), one scheduled backup per
        database found on it, each a task of its own (its own slot, lock and outcome: one failing stops none of
        the others)."""
        if database is not None and database in databases.deployment().servers:
            return self.fan_out(database, cron, tz, slot)
        db = databases.select(database)
        slot = slot_of(cron, tz, slot, db)
        settings, task_id = db.settings, self.task_id
        url, args = settings.database_url, {"database": database}
        report = {"slot": slot, "database": target_name(db), "db": db.name}
        status, detail = queue_state.claim_slot(url, slot, task_id)
        if status == "taken":
            logger.warning("scheduled backup of %s for slot %s skipped: task %s already has it", db.name, slot,
                           detail)
            reason = f"slot {slot} was already taken by task {detail}"
            return ScheduledBackupResult(**report, skipped=True, reason=reason).model_dump(mode="json")
        if status == "created":  # this task made the backup, then its worker died: finish the rest
            created: dict[str, Any] = {"name": detail, "resumed": True}
        else:
            created = run_job("create", {**args, "runner_factory": self.part_runner}, progress, task_id=task_id)
            queue_state.slot_created(url, slot, task_id, created["name"])
        info["file"] = created["name"]
        uploaded = None
        if settings.s3_enabled:
            uploaded = self.retry(
                lambda: run_job("upload", {**args, "file": created["name"]}, progress, task_id=task_id), "upload")
        cleaned = self.retry(lambda: run_job("cleanup", {**args, "target": "all"}, progress, task_id=task_id),
                             "cleanup")
        return ScheduledBackupResult(**report, skipped=False, create=created, upload=uploaded,
                                     cleanup=cleaned).model_dump(mode="json")

    def fan_out(self, server: str, cron: str | None, tz: str | None, slot: str | None) -> dict[str, Any]:
        dep = databases.deployment()
        found = databases.discovered(dep, dep.servers[server])
        for db in found:  # the same slot for all (Beat's); without one, each computes it from the same cron
            self.send({"database": db.name, "cron": cron, "timezone": tz, "slot": slot})
        logger.info("scheduled backup of server %s (slot %s): %d databases: %s", server, slot, len(found),
                    ", ".join(db.name for db in found))
        return ScheduledBackupResult(slot=slot or "", db=server, skipped=False,
                                     fanned_out=[db.name for db in found]).model_dump(mode="json")


DRILL_SLOT_PREFIX = "drill-"  # a drill's slot key differs from the same minute's backup slot


@dataclass
class ScheduledDrill:
    task_id: str

    def run(self, info: dict[str, Any], progress: ProgressFn, database: str | None, cron: str | None,
            tz: str | None, slot: str | None) -> dict[str, Any]:
        """Drill the database's newest backup once per slot. A second delivery for the slot does nothing; the
        same task delivered again (its worker died) drills again: a drill only overwrites the scratch database."""
        db = databases.select(database)
        if not (cron or db.config.BACKUP_DRILL_CRON) and slot is None:
            raise UsageError(f"no drill schedule for {db.name}: BACKUP_DRILL_CRON is not set",
                             hint="Set BACKUP_DRILL_CRON (5 cron fields), or run `backupctl drill`.")
        slot = slot_of(cron, tz, slot, db, db.config.BACKUP_DRILL_CRON)
        report = {"slot": slot, "database": target_name(db), "db": db.name}
        status, detail = queue_state.claim_slot(db.url, DRILL_SLOT_PREFIX + slot, self.task_id)
        if status == "taken":
            logger.warning("scheduled drill of %s for slot %s skipped: task %s already has it", db.name, slot, detail)
            return ScheduledDrillResult(**report, skipped=True, reason=f"slot {slot} was already taken by task "
                                        f"{detail}").model_dump(mode="json")
        result = run_job("drill", {"database": database}, progress, task_id=self.task_id)
        info["file"] = result.get("backup")
        return ScheduledDrillResult(**report, skipped=False, drill=result).model_dump(mode="json")
