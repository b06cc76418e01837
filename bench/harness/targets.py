"""Every target the issues set for `make bench`, in one table, and how each is evaluated.

A target names an operation, a metric and a limit, on datasets of some kinds:
    time        median wall-clock time of op / that of ref              (process start-up included)
    size        median output size of op / that of ref
    rss         peak RSS of op's process tree, MB (the max over its runs)
    worker_rss  peak RSS of any one worker pool process during op, MB (a queued job runs there)
    rss_ratio   peak RSS of op / that of ref
    cpu_work    median CPU-s of op (client + worker + server) / that of ref
    extra_s     median time of op - that of ref, seconds (the queue's cost: queued against --local)
    oracle      the oracle's verdict on the target after op's last run: EQUAL
    changes     whether the diff found changed rows: "none" on the unchanged source, "some" on the changed target
Between the smallest and the largest pgbench scale (GROWTH): time per row and peak RSS, largest / smallest.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    issue: int
    kinds: tuple[str, ...]
    op: str
    metric: str
    limit: float | str
    ref: str | None = None


def _each(issue, kinds, ops, metric, limit, ref=None) -> list[Target]:
    return [Target(issue, kinds, op, metric, limit, ref) for op in ops]


CREATE = ("create_local", "create_queued")
RESTORE = ("restore_local", "restore_queued")
DIFFS = ("diff_changed_local", "diff_changed_queued", "diff_unchanged_local")
QUEUED = ("create_queued", "restore_queued", "diff_changed_queued")
JOBS = ("create_jobs1", "create_jobs2", "create_jobs4")
PG = ("pgbench",)

TARGETS: tuple[Target, ...] = (
    # Issue 14: the restore a user runs, --yes, queued and --local, on a database changed since the backup.
    *_each(14, ("pgbench", "many"), RESTORE, "time", 1.0, "pg_restore"),
    *_each(14, ("many",), CREATE, "time", 1.0, "pg_dump_fc"),
    Target(14, PG, "diff_changed_local", "time", 1.2, "create_local"),
    Target(14, PG, "diff_changed_queued", "time", 1.2, "create_queued"),
    *_each(14, ("pgbench", "many"), CREATE + RESTORE + DIFFS, "rss", 100),
    *_each(14, ("pgbench", "many"), QUEUED, "worker_rss", 100),
    *_each(14, ("pgbench", "many", "wide", "skewed"), RESTORE, "oracle", "EQUAL"),
    # Issue 6, still meaningful measured the user's way (start-up included).
    *_each(6, ("pgbench", "many", "wide", "skewed"), ("diff_unchanged_local",), "changes", "none"),
    *_each(6, ("pgbench", "many", "wide", "skewed"), ("diff_changed_local", "diff_changed_queued"), "changes", "some"),
    Target(6, PG, "create_local", "time", 0.75, "pg_dump_fc"),
    Target(6, PG, "create_local", "size", 1.15, "pg_dump_fc"),
    Target(6, PG, "diff_unchanged_local", "time", 1.5, "create_local"),
    Target(6, PG, "create_queued", "extra_s", 0.5, "create_local"),
    # Issue 19: rows of several MB in bounded memory (a single row's own size aside: see the dataset's line).
    *_each(19, ("wide",), CREATE + RESTORE, "rss", 150),
    *_each(19, ("wide",), ("create_queued", "restore_queued"), "worker_rss", 150),
    *_each(19, ("wide",), CREATE, "time", 1.5, "pg_dump_fc"),
    *_each(19, ("wide",), RESTORE, "time", 1.5, "pg_restore"),
    # Issue 15: one backup split across the worker's processes, in one snapshot.
    Target(15, ("pgbench", "skewed"), "create_jobs2", "time", 0.6, "pg_dump_fc"),
    Target(15, ("pgbench", "skewed"), "create_jobs2", "time", 0.7, "pg_dump_fd_j2"),
    Target(15, ("pgbench", "skewed"), "create_jobs2", "time", 0.8, "create_jobs1"),
    Target(15, ("pgbench", "skewed"), "create_jobs2", "size", 1.15, "pg_dump_fc"),
    Target(15, ("pgbench", "skewed"), "create_jobs2", "cpu_work", 1.10, "create_jobs1"),
    *_each(15, ("pgbench", "skewed"), JOBS, "worker_rss", 100),
    *_each(15, ("pgbench", "skewed"), ("restore_jobs1", "restore_jobs2", "restore_jobs4"), "oracle", "EQUAL"),
    # Issue 18: age encryption costs little time and no memory.
    Target(18, PG, "create_age_local", "time", 1.1, "create_local"),
    Target(18, PG, "restore_age_local", "time", 1.1, "restore_local"),
    Target(18, PG, "create_age_local", "rss_ratio", 1.1, "create_local"),
    Target(18, PG, "restore_age_local", "rss_ratio", 1.1, "restore_local"),
    Target(18, PG, "restore_age_local", "oracle", "EQUAL"),
)

# Issue 6 (and 14's "flat across scales"): (operation, time-per-row limit, RSS limit), largest / smallest scale.
GROWTH = (("create_local", 1.25, 1.15), ("restore_local", 1.25, 1.15), ("diff_changed_local", 1.25, 1.15))

# What each row's ratio column compares with: pg_dump -Fc for backups, TRUNCATE + pg_restore for restores, our
# own backup of the same kind (queued or --local) for diffs.
def row_reference(op) -> str | None:
    if op.group == "diff":
        return "create_queued" if op.queued else "create_local"
    ref = {"backup": "pg_dump_fc", "restore": "pg_restore", "check": "pg_restore"}[op.group]
    return None if ref == op.key else ref


SHORT = {"pg_dump_fc": "-Fc", "pg_dump_fd_j2": "-Fd -j2", "pg_restore": "pg_restore", "create_local": "create",
         "create_queued": "create(q)", "create_jobs1": "jobs1", "restore_local": "restore"}


def describe(t: Target) -> str:
    if t.metric == "oracle":
        return "oracle EQUAL"
    if t.metric == "changes":
        return f"finds {t.limit} changed"
    if t.metric in ("rss", "worker_rss"):
        return f"{'wrk ' if t.metric == 'worker_rss' else ''}rss<={t.limit:g}"
    if t.metric == "extra_s":
        return f"t<={SHORT.get(t.ref, t.ref)}+{t.limit:g}s"
    what = {"time": "t", "size": "size", "rss_ratio": "rss", "cpu_work": "cpu"}[t.metric]
    return f"{what}<={t.limit:g}x {SHORT.get(t.ref, t.ref)}"
