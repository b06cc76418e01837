"""The engine every command of a run uses: a copy of backup_tasks/ taken when the run starts.

Others edit the package while a benchmark runs; without a copy one run's figures would mix versions. Every
`backupctl` command and the Celery worker run with PYTHONPATH pointing at the copy: a PYTHONPATH entry comes
before site-packages, where the editable install's finder lives, so `import backup_tasks` finds the copy
(checked once per run: `Engine.check_import`). The dependencies are the venv's.
"""

from __future__ import annotations

import compileall
import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .pg import HarnessError

# Settings that would leak from the developer's environment into our commands and change what they do.
SCRUBBED = ("S3_BUCKET_NAME", "S3_ENDPOINT_URL", "BACKUP_NOTIFY_WEBHOOK_URL", "BACKUP_CRON", "BACKUP_TIMEZONE",
            "CELERY_TASK_SOFT_TIME_LIMIT", "CELERY_TASK_TIME_LIMIT", "WORKER_CONCURRENCY", "BACKUP_JOBS",
            "BACKUP_AGE_RECIPIENTS", "BACKUP_AGE_RECIPIENTS_FILE", "BACKUP_AGE_IDENTITY_FILE", "PYTHONPATH",
            "DATABASE_URL", "BACKUP_DIR", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")


def fingerprint(root: Path) -> str:
    """Hash of the package's Python source under root/backup_tasks as it is on disk now."""
    h = hashlib.sha256()
    for f in sorted((root / "backup_tasks").rglob("*.py")):
        try:
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
        except OSError:
            continue
    return h.hexdigest()[:12]


def git_head(tree: Path) -> dict:
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=tree, check=False, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    return {"head": git("rev-parse", "--short", "HEAD"),
            "engine_dirty": bool(git("status", "--porcelain", "--", "backup_tasks"))}


@dataclass
class Engine:
    source_tree: Path            # where the copy was taken from
    root: Path                   # the copy (holds backup_tasks/ and beat_schedule.py)
    fingerprint: str
    git: dict
    features: dict = field(default_factory=dict)

    @classmethod
    def snapshot(cls, tree: Path, work: Path) -> Engine:
        dest = work / "engine"
        shutil.rmtree(dest, ignore_errors=True)  # a --workdir used before
        shutil.copytree(tree / "backup_tasks", dest / "backup_tasks",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        if (tree / "beat_schedule.py").exists():
            shutil.copy2(tree / "beat_schedule.py", dest / "beat_schedule.py")
        # Byte-compiled, as an installed package is (pip compiles at install): with PYTHONDONTWRITEBYTECODE set,
        # as on this machine, every command would otherwise compile the ~75 modules it imports (~0.1 s each start).
        compileall.compile_dir(str(dest), quiet=1)
        return cls(tree, dest, fingerprint(dest), git_head(tree))

    def env(self, **values: str) -> dict:
        """The environment of one of our commands: the developer's, scrubbed, with the copy first on the path."""
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
        env.update(PYTHONPATH=str(self.root), PYTHONUNBUFFERED="1", **values)
        return env

    def backupctl(self) -> list[str]:
        """The command a user runs: the venv's console script (its `import backup_tasks` finds the copy)."""
        script = Path(sys.executable).parent / "backupctl"
        return [str(script)] if script.exists() else [sys.executable, "-m", "backup_tasks"]

    def worker_argv(self, concurrency: int, name: str) -> list[str]:
        """The worker as a deployment starts it: `backup-tasks-worker` (backup_tasks/processes.py, what ./worker
        and the image run), with our node name; `celery … worker` itself for an engine older than that."""
        script = Path(sys.executable).parent / "backup-tasks-worker"
        extra = ["-n", f"{name}@%h", "--without-mingle", "--without-gossip"]
        if script.exists() and (self.root / "backup_tasks" / "processes.py").exists():
            return [str(script), *extra]  # WORKER_CONCURRENCY in its environment sets the processes
        return [sys.executable, "-m", "celery", "-A", "backup_tasks.celery_app", "worker", "-E", "--loglevel=INFO",
                f"--concurrency={concurrency}", *extra]

    def check_import(self, cwd: Path) -> str:
        probe = subprocess.run([sys.executable, "-c", "import backup_tasks; print(backup_tasks.__file__)"],
                               check=False, env=self.env(), cwd=cwd, capture_output=True, text=True)
        where = probe.stdout.strip()
        if probe.returncode != 0 or not Path(where).is_relative_to(self.root):
            raise HarnessError(f"commands would import backup_tasks from {where or probe.stderr[-500:]!r}, "
                               f"not from the copy in {self.root}")
        return where

    def detect_features(self, cwd: Path) -> dict:
        """What this engine's CLI offers, from its --help (others are adding --jobs and keygen now)."""
        def helptext(*args: str) -> str:
            p = subprocess.run(self.backupctl() + list(args) + ["--help"], check=False, env=self.env(), cwd=cwd,
                               capture_output=True, text=True)
            return p.stdout if p.returncode == 0 else ""

        top = helptext()
        self.features = {
            "jobs": bool(re.search(r"^\s+(?:-\w, )?--jobs\b", helptext("create"), re.MULTILINE)),
            "keygen": bool(re.search(r"^\s+keygen\b", top, re.MULTILINE)),
        }
        if self.features["keygen"]:
            self.features["keygen_help"] = helptext("keygen")
        return self.features

    def still_same(self) -> bool:
        return fingerprint(self.root) == self.fingerprint
