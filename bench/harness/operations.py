"""Every measured operation, in one table: its command, what it needs, where it runs, what it leaves behind.

Groups run in this order on each dataset, each group --reps times in alternating order (ABBA):
    backup    against the source; the last output of each is kept for the groups after it
    diff      our backup against the target changed ~1 % since (and the unchanged source)
    restore   into the target, which before each one is brought back to "changed ~1 % since the backup"
    check     once: the files of other ways of backing up (--jobs N) restored and checked by the oracle
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import ours, reference
from .context import DatasetRun
from .measure import Command

ALL = ("pgbench", "wide", "many", "skewed")
PARALLEL = ("pgbench", "skewed")       # issue 15's rows: the scale-N database and the skewed one
JOBS = (1, 2, 4)


@dataclass(frozen=True)
class Operation:
    key: str
    label: str
    group: str                               # backup | diff | restore | check
    side: str                                # reference | ours
    build: Callable[[DatasetRun], Command]
    kinds: tuple[str, ...] = ALL
    queued: bool = False
    needs: str | None = None                 # an engine feature: "jobs", "keygen"
    before: Callable[[DatasetRun], None] | None = None
    oracle: bool = False                     # a restore whose result the oracle checks (after its last rep)
    input: str | None = None                 # the operation whose last file this one reads


def _dump(key: str, *flags: str) -> Operation:
    label = "pg_dump " + " ".join(flags) + " --data-only"
    kinds = ALL if key == "pg_dump_fc" else PARALLEL
    return Operation(key, label, "backup", "reference", lambda run: reference.dump(run, key, *flags), kinds,
                     before=lambda run: reference.remove_output(run, key))


def _create(key: str, label: str, local: bool, jobs: int | None = None, encrypted: bool = False,
            kinds=ALL, needs=None) -> Operation:
    def before(run: DatasetRun) -> None:
        ours.remove_backup(run.files.pop(key, None))  # the previous rep's file: only the last one is kept

    return Operation(key, label, "backup", "ours", lambda run: ours.create(run, local, jobs, encrypted), kinds,
                     queued=not local, needs=needs, before=before)


def _restore(key: str, label: str, file_key: str, local: bool, group="restore", encrypted=False, kinds=ALL,
             needs=None) -> Operation:
    return Operation(key, label, group, "ours", lambda run: ours.restore(run, file_key, local, encrypted), kinds,
                     queued=not local, needs=needs, oracle=True, input=file_key)


OPERATIONS: tuple[Operation, ...] = (
    _dump("pg_dump_fc", "-Fc"),
    _dump("pg_dump_z1", "-Fc", "-Z1"),
    _dump("pg_dump_fd_j2", "-Fd", "-j", "2"),
    _create("create_local", "backupctl create --local", local=True),
    _create("create_queued", "backupctl create (queued)", local=False),
    *(_create(f"create_jobs{n}", f"backupctl create --jobs {n} (queued)", local=False, jobs=n, kinds=PARALLEL,
              needs="jobs") for n in JOBS),
    _create("create_age_local", "backupctl create --local, age-encrypted", local=True, encrypted=True,
            kinds=("pgbench",), needs="keygen"),
    Operation("diff_changed_local", "backupctl diff --local, ~1% changed", "diff", "ours",
              lambda run: ours.diff(run, "create_local", local=True, against_target=True), input="create_local"),
    Operation("diff_changed_queued", "backupctl diff (queued), ~1% changed", "diff", "ours",
              lambda run: ours.diff(run, "create_local", local=False, against_target=True), queued=True,
              input="create_local"),
    Operation("diff_unchanged_local", "backupctl diff --local, unchanged", "diff", "ours",
              lambda run: ours.diff(run, "create_local", local=True, against_target=False), input="create_local"),
    Operation("pg_restore", "TRUNCATE + pg_restore --data-only -1", "restore", "reference",
              reference.truncate_and_restore, input="pg_dump_fc"),
    _restore("restore_local", "backupctl restore --yes --local", "create_local", local=True),
    _restore("restore_queued", "backupctl restore --yes (queued)", "create_local", local=False),
    _restore("restore_age_local", "backupctl restore --yes --local, age-encrypted", "create_age_local", local=True,
             encrypted=True, kinds=("pgbench",), needs="keygen"),
    *(_restore(f"restore_jobs{n}", f"backupctl restore --yes --local of the --jobs {n} file", f"create_jobs{n}",
               local=True, group="check", kinds=PARALLEL, needs="jobs") for n in JOBS),
)

BY_KEY = {op.key: op for op in OPERATIONS}


def for_dataset(kind: str, features: dict, only: set[str] | None = None) -> tuple[list[Operation], dict]:
    """The operations that run on a dataset of this kind, and those skipped with the reason. pg_dump -Fc runs
    even when --only leaves it out: its file is what the target is filled with before a restore or diff."""
    only = only | {"pg_dump_fc"} if only else None
    run, skipped = [], {}
    for op in OPERATIONS:
        if kind not in op.kinds or (only and op.key not in only):
            continue
        if op.needs and not features.get(op.needs):
            skipped[op.key] = {"jobs": "not available: `backupctl create --help` lists no --jobs",
                               "keygen": "not available: `backupctl --help` lists no keygen"}[op.needs]
            continue
        run.append(op)
    return run, skipped
