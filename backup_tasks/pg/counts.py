"""Exact row counts of many tables in few round trips: the diff's counts and a restore's preface share them."""

from __future__ import annotations

from psycopg2 import sql

from .catalog import Table

COUNTS_PER_QUERY = 200  # one UNION ALL of count(*) per this many tables: 1,000 tables are five round trips
# A UNION ALL of 200 small tables' counts costs the planner enough to run it as a Parallel Append, and starting
# the workers (who then open every relation again) cost more than the scans: measured on 200 tables of 200 rows,
# 25-46 ms a query with parallel workers against 9-27 ms without. A big table's count is what parallel workers are
# for (a scan of pgbench_accounts' 2 M rows shared by three processes): tables from the size at which PostgreSQL
# starts to consider a parallel scan (min_parallel_table_scan_size's default, 8 MB) are counted in a query of
# their own, as the planner likes. Parallelism is off for the small ones' queries only, by SET LOCAL and RESET (a
# restore's foreign key validation later in the same transaction may well want it).
PARALLEL_SCAN_PAGES = 1024
_NO_PARALLEL = sql.SQL("SET LOCAL max_parallel_workers_per_gather = 0; ")


def count_rows(cur, tables: list[Table]) -> dict[str, int]:
    """count(*) of every table, FROM ONLY it (an extension configuration table's through its filter), by key."""
    big = [t for t in tables if t.heap_pages >= PARALLEL_SCAN_PAGES]
    small = [t for t in tables if t.heap_pages < PARALLEL_SCAN_PAGES]
    counts: dict[str, int] = {}
    for group, prefix in ((big, sql.SQL("")), (small, _NO_PARALLEL)):
        for start in range(0, len(group), COUNTS_PER_QUERY):
            counts.update(_count(cur, group[start:start + COUNTS_PER_QUERY], prefix))
    if small:
        cur.execute("RESET max_parallel_workers_per_gather")
    return counts


def _count(cur, tables: list[Table], prefix: sql.Composable) -> dict[str, int]:
    cur.execute(prefix + sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}::int, count(*) FROM ONLY {} {}").format(sql.Literal(i), t.ident, sql.SQL(t.filter or ""))
        for i, t in enumerate(tables)))
    return {tables[i].key: int(n) for i, n in cur.fetchall()}
