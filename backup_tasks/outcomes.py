"""What each database's jobs came to, kept in Redis for the metrics process: one small hash per database.

The tasks write it when a job ends (tasks.py: on_success / on_failure); metrics.py reads it on a scrape. One
HGETALL per database instead of scanning Celery's result keys (which expire, and hold every job of every kind).
Nothing secret goes in: names, numbers, and the job's user-facing error message passed through dsn.mask.

Fields of `backup_tasks:outcome:<database>`:
- `backup:finished` `backup:name` `backup:bytes` `backup:duration_s` `backup:rows`: the last successful backup
  (a `create` job or a scheduled one; a skipped slot is not a backup);
- `<job>:failures` (a counter), `<job>:outcome` ("success" | "failure"), `<job>:finished` (Unix time);
- `last:job` `last:outcome` `last:finished` `last:error`: the last job of any kind that ended.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from . import dsn, queue_state

KEY_PREFIX = f"{queue_state.PREFIX}outcome:"
BACKUP_JOBS = ("create", "scheduled_backup")
ERROR_MAX_CHARS = 500


def key(database: str) -> str:
    return KEY_PREFIX + database


@dataclass(frozen=True)
class BackupFacts:
    """The numbers of a successful backup job's result, whichever job made it."""

    name: str
    bytes: int
    duration_s: float
    rows: int

    @classmethod
    def of(cls, job: str, result: dict[str, Any]) -> BackupFacts | None:
        created = result.get("create") if job == "scheduled_backup" else result
        if not isinstance(created, dict) or "compressed_bytes" not in created:
            return None  # a skipped slot, a resumed one (the backup was counted when it was made), or no backup
        return cls(str(created.get("name")), int(created.get("compressed_bytes") or 0),
                   float(created.get("duration_s") or 0.0), int(created.get("total_rows") or 0))


def record_success(database: str, job: str, result: dict[str, Any], r=None) -> None:
    now = time.time()
    fields: dict[str, Any] = {f"{job}:outcome": "success", f"{job}:finished": now, "last:job": job,
                              "last:outcome": "success", "last:finished": now, "last:error": ""}
    facts = BackupFacts.of(job, result)
    if facts is not None:
        fields.update({"backup:finished": now, "backup:name": facts.name, "backup:bytes": facts.bytes,
                       "backup:duration_s": facts.duration_s, "backup:rows": facts.rows})
    r = r or queue_state.client()
    pipe = r.pipeline()
    pipe.hset(key(database), mapping=fields)
    pipe.hsetnx(key(database), f"{job}:failures", 0)  # so the counter exists from the first job on
    queue_state.call(pipe.execute)


def record_failure(database: str, job: str, error: str, r=None) -> None:
    now = time.time()
    fields = {f"{job}:outcome": "failure", f"{job}:finished": now, "last:job": job, "last:outcome": "failure",
              "last:finished": now, "last:error": dsn.mask(error)[:ERROR_MAX_CHARS]}
    r = r or queue_state.client()
    pipe = r.pipeline()
    pipe.hset(key(database), mapping=fields)
    pipe.hincrby(key(database), f"{job}:failures", 1)
    queue_state.call(pipe.execute)


@dataclass
class Outcomes:
    """One database's hash, parsed."""

    fields: dict[str, str] = field(default_factory=dict)

    def number(self, name: str) -> float | None:
        try:
            return float(self.fields[name])
        except (KeyError, ValueError):
            return None

    def failures(self) -> dict[str, int]:
        return {k.removesuffix(":failures"): int(float(v)) for k, v in self.fields.items()
                if k.endswith(":failures") and not k.startswith("last:")}

    def outcomes(self) -> dict[str, str]:
        return {k.removesuffix(":outcome"): v for k, v in self.fields.items()
                if k.endswith(":outcome") and not k.startswith("last:")}


def read(databases: list[str], r=None) -> dict[str, Outcomes]:
    """Every database's hash in one round trip."""
    if not databases:
        return {}
    r = r or queue_state.client()
    pipe = r.pipeline()
    for name in databases:
        pipe.hgetall(key(name))
    answers = queue_state.call(pipe.execute)
    return {name: Outcomes({_text(k): _text(v) for k, v in (answer or {}).items()})
            for name, answer in zip(databases, answers, strict=True)}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
