"""Exact row counts of many tables in few round trips: the diff's counts and a restore's preface share them."""

from __future__ import annotations

from psycopg2 import sql

from .catalog import Table

COUNTS_PER_QUERY = 200  # one UNION ALL of count(*) per this many tables: 1,000 tables are five round trips
# A UNION ALL of 200 counts costs the planner enough to run it as a Parallel Append, and starting the workers
# (who then open every relation again) cost more than the scans: measured on 200 tables of 200 rows, 25-46 ms a
# query with parallel workers against 9-27 ms without. Off for these queries only (a restore's foreign key
# validation later in the same transaction may well want them), by SET LOCAL and then RESET.
_NO_PARALLEL = sql.SQL("SET LOCAL max_parallel_workers_per_gather = 0; ")


def count_rows(cur, tables: list[Table]) -> dict[str, int]:
    """count(*) of every table, FROM ONLY it (an extension configuration table's through its filter), by key."""
    counts: dict[str, int] = {}
    for start in range(0, len(tables), COUNTS_PER_QUERY):
        chunk = tables[start:start + COUNTS_PER_QUERY]
        cur.execute(_NO_PARALLEL + sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}::int, count(*) FROM ONLY {} {}").format(sql.Literal(i), t.ident, sql.SQL(t.filter or ""))
            for i, t in enumerate(chunk)))
        for i, n in cur.fetchall():
            counts[chunk[i].key] = int(n)
    if tables:
        cur.execute("RESET max_parallel_workers_per_gather")
    return counts
