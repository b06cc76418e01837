"""The benchmark's datasets: what each holds, how it is built (once; reused with --keep-db), its restore target.

    pgbench   pgbench -i -s N (primary keys) + the `mixed` table of max(50,000 x N, 100,000) awkward rows
    wide      rows of several MB of text and bytea (issue 19)
    many      1,000 small tables of 200 rows (issue 14: per-table costs)
    skewed    pgbench + a big `mixed` table holding >= 60 % of the data (issue 15: one table caps pg_dump -j)

The database name carries the sizes, so a --quick build never replaces a full-size one kept with --keep-db. A
marker row, written last, says the build completed; the target (same schema, no rows) is made fresh every run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import psycopg2

from . import generators
from .pg import Pg

KINDS = ("pgbench", "wide", "many", "skewed")


@dataclass
class Dataset:
    kind: str
    db: str
    params: dict
    change_sql: tuple[str, ...]
    label: str
    scale: int | None = None             # pgbench's scale, for the growth rows between scales
    facts: dict = field(default_factory=dict)  # measured after the build: rows, bytes, largest table's share

    @property
    def target(self) -> str:
        return self.db + "_target"


def mixed_rows_for(scale: int) -> int:
    return max(50_000 * scale, 100_000)


def prefix(opts) -> str:
    return f"bench_{opts.db_tag}_" if opts.db_tag else "bench_"


def plan(opts) -> list[Dataset]:
    """The datasets of this run, in order, from the options (sizes and --datasets)."""
    out: list[Dataset] = []
    pre = prefix(opts)
    for kind in opts.datasets:
        if kind == "pgbench":
            for s in opts.scales:
                mixed = opts.mixed_rows or mixed_rows_for(s)
                out.append(Dataset("pgbench", f"{pre}pgbench_s{s}_m{mixed}", {"scale": s, "mixed_rows": mixed},
                                   generators.CHANGE_PGBENCH, f"pgbench s{s}", scale=s))
        elif kind == "wide":
            p = {"rows": opts.wide_rows, "row_mb": opts.wide_row_mb}
            out.append(Dataset("wide", f"{pre}wide_r{p['rows']}_{p['row_mb']:g}mb".replace(".", "_"), p,
                               generators.CHANGE_WIDE, f"wide {p['rows']}x{p['row_mb']:g}MB"))
        elif kind == "many":
            p = {"tables": opts.many_tables, "rows": opts.many_rows}
            out.append(Dataset("many", f"{pre}many_t{p['tables']}_r{p['rows']}", p, generators.CHANGE_MANY,
                               f"many {p['tables']}x{p['rows']}"))
        elif kind == "skewed":
            p = {"scale": opts.skewed_scale, "mixed_rows": opts.skewed_mixed_rows}
            out.append(Dataset("skewed", f"{pre}skewed_s{p['scale']}_m{p['mixed_rows']}", p,
                               generators.CHANGE_PGBENCH, f"skewed s{p['scale']}+{p['mixed_rows']} mixed"))
    return out


def is_built(pg: Pg, ds: Dataset) -> bool:
    if not pg.exists(ds.db):
        return False
    try:
        rows = pg.execute(ds.db, "SELECT dataset, params, complete FROM bench_marker")
    except psycopg2.Error:
        return False
    return rows == [(ds.kind, json.dumps(ds.params, sort_keys=True), True)]


def build(pg: Pg, ds: Dataset, log) -> float:
    """Build the source database from nothing; returns the seconds it took."""
    t0 = time.perf_counter()
    log(f"building {ds.db} ({ds.label})")
    pg.create(ds.db)
    if ds.kind in ("pgbench", "skewed"):
        pg.tool("pgbench", "-i", "-s", str(ds.params["scale"]), "-q", "-I", "dtgvp", ds.db)
    statements = {
        "pgbench": lambda p: generators.mixed_sql(p["mixed_rows"]),
        "skewed": lambda p: generators.mixed_sql(p["mixed_rows"]),
        "wide": lambda p: generators.wide_sql(p["rows"], p["row_mb"]),
        "many": lambda p: generators.many_sql(p["tables"], p["rows"]),
    }[ds.kind](ds.params)
    pg.execute(ds.db, statements)
    pg.execute(ds.db, generators.MARKER_SQL)
    pg.execute(ds.db, "VACUUM (FREEZE, ANALYZE)")  # hint bits and visibility map set before anyone times a read
    pg.execute(ds.db, "INSERT INTO bench_marker VALUES (%s, %s, now(), true)",
               (ds.kind, json.dumps(ds.params, sort_keys=True)))
    took = time.perf_counter() - t0
    log(f"built {ds.db} in {took:.1f} s")
    return took


def build_target(pg: Pg, ds: Dataset) -> None:
    """An empty database with the source's schema: `pg_dump --schema-only | psql`, as a user would make one."""
    pg.create(ds.target)
    schema = pg.tool("pg_dump", "--schema-only", ds.db).stdout
    pg.tool("psql", "-q", "-X", "-v", "ON_ERROR_STOP=1", "-d", ds.target, "-f", "-", input=schema)


FACTS_SQL = """
SELECT count(*), coalesce(sum(pg_table_size(c.oid)), 0), coalesce(max(pg_table_size(c.oid)), 0),
       (SELECT relname FROM pg_class c2 JOIN pg_namespace n2 ON n2.oid = c2.relnamespace
         WHERE c2.relkind = 'r' AND n2.nspname = 'public' ORDER BY pg_table_size(c2.oid) DESC LIMIT 1),
       coalesce(sum(c.reltuples) FILTER (WHERE c.reltuples > 0), 0)::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname = 'public'
"""


def measure_facts(pg: Pg, ds: Dataset) -> dict:
    """Tables, rows (estimated from the statistics VACUUM ANALYZE left), bytes of table data (heap + TOAST, no
    indexes), and the largest table's share of those bytes."""
    tables, data_bytes, largest, largest_name, rows = pg.execute(ds.db, FACTS_SQL)[0]
    ds.facts = {"tables": tables, "rows_estimate": int(rows), "data_bytes": int(data_bytes),
                "database_bytes": pg.value("postgres", "SELECT pg_database_size(%s)", (ds.db,)),
                "largest_table": largest_name, "largest_share": round(largest / data_bytes, 3) if data_bytes else 0}
    if ds.kind == "wide":
        ds.facts["row_mb"] = ds.params["row_mb"]
    return ds.facts


def prepare(pg: Pg, ds: Dataset, keep: bool, log) -> None:
    if keep and is_built(pg, ds):
        log(f"reusing {ds.db} (its marker row says the build completed)")
        ds.facts["built_s"] = None
    else:
        if keep:
            log(f"{ds.db} is missing or incomplete: building it")
        built = build(pg, ds, log)
        ds.facts["built_s"] = round(built, 1)
    build_target(pg, ds)
    built_s = ds.facts.get("built_s")
    measure_facts(pg, ds)
    ds.facts["built_s"] = built_s


def change_target(pg: Pg, ds: Dataset) -> None:
    """~1 % of the big tables' rows changed, then VACUUM: the target looks like a database used since the backup
    (hint bits set, statistics fresh), not like one that was just loaded and never read."""
    for statement in ds.change_sql:
        pg.execute(ds.target, statement)
    pg.execute(ds.target, "VACUUM (FREEZE, ANALYZE)")


def drop(pg: Pg, ds: Dataset, keep: bool) -> None:
    pg.drop(ds.target)
    if not keep:
        pg.drop(ds.db)
