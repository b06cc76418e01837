"""What the operations of one dataset share: where things are, the worker, the files made so far."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .datasets import Dataset
from .engine import Engine
from .measure import Watch
from .pg import Pg


@dataclass
class Keys:
    """An age key pair made with `backupctl keygen` (issue 18)."""
    identity_file: Path
    recipient: str


@dataclass
class DatasetRun:
    pg: Pg
    ds: Dataset
    engine: Engine
    dir: Path                       # scratch files of this dataset (pg_dump's outputs)
    backup_dir: Path                # the worker's BACKUP_DIR; our --local backups are written there too
    broker: str | None = None
    worker_pid: int | None = None
    postmaster_pid: int | None = None
    keys: Keys | None = None
    files: dict[str, Path] = field(default_factory=dict)  # operation key -> its last output
    target_state: str = "empty"     # empty | restored (equal to the backup) | changed (~1 % since) | unknown

    @property
    def source_url(self) -> str:
        return self.pg.url(self.ds.db)

    @property
    def target_url(self) -> str:
        return self.pg.url(self.ds.target)

    def ours_env(self, **extra: str) -> dict:
        values = {"DATABASE_URL": self.source_url, "BACKUP_DIR": str(self.backup_dir)}
        if self.broker:
            values.update(CELERY_BROKER_URL=self.broker, CELERY_RESULT_BACKEND=self.broker)
        return self.engine.env(**values, **extra)

    def watch(self, queued: bool) -> Watch:
        return Watch(worker_pid=self.worker_pid if queued else None, postmaster_pid=self.postmaster_pid,
                     databases=(self.ds.db, self.ds.target))
