"""The statements a restore runs inside its one transaction, besides COPY."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg2
from psycopg2 import sql

from ..tablekey import table_key
from .catalog import ALEMBIC_TABLE, Catalog, ForeignKey, Table
from .snapshot import lock_tables

_ENABLE = {"O": "ENABLE TRIGGER", "A": "ENABLE ALWAYS TRIGGER", "R": "ENABLE REPLICA TRIGGER"}


@dataclass
class SavedForeignKey:
    child: sql.Composable
    name: str
    definition: str
    parent_label: str
    child_label: str


def lock_timeout(cur, seconds: float) -> None:
    cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(seconds * 1000)}ms",))


def partition_ancestors(cur, tables: list[Table]) -> dict[int, set[int]]:
    """Each table's partitioned ancestors (an FK on a partitioned parent covers its leaves)."""
    if not tables:
        return {}
    # pg_partition_ancestors() returns regclass, which psycopg2 hands back as a *name*: cast to oid, or the
    # sets hold strings that never match an oid and partition ancestry is silently ignored (a --table restore
    # of a leaf then failed to drop the FK referencing its parent and TRUNCATE errored out).
    cur.execute(
        "SELECT t.oid, a.relid::oid FROM unnest(%s::oid[]) AS t(oid) "
        "CROSS JOIN LATERAL pg_partition_ancestors(t.oid) AS a(relid) WHERE a.relid <> t.oid",
        ([t.oid for t in tables],),
    )
    out: dict[int, set[int]] = {t.oid: set() for t in tables}
    for oid, ancestor in cur.fetchall():
        out[oid].add(ancestor)
    return out


def relevant_foreign_keys(catalog: Catalog, restored: list[Table], ancestors: dict[int, set[int]]) -> tuple[
        list[ForeignKey], list[tuple[ForeignKey, bool]]]:
    """FKs touching the restored tables, and for each whether the restore can keep it intact: True unless the
    referenced side is restored while the referencing side is not entirely restored.

    `ancestors` must cover every table of the catalog (not only the restored ones): a partitioned table counts
    as entirely restored only when all of its leaves are, so restoring one leaf of a partitioned table does
    not pass for restoring the whole table.
    """
    restored_oids = {t.oid for t in restored}
    data_tables = {t.oid for t in catalog.tables}
    touched = set(restored_oids)
    for t in restored:
        touched |= ancestors.get(t.oid, set())

    def entirely_restored(oid: int) -> bool:
        if oid in data_tables:
            return oid in restored_oids
        # A partitioned table: entirely restored when every one of its leaves is.
        return all(t.oid in restored_oids for t in catalog.tables if oid in ancestors.get(t.oid, ()))

    hits = [fk for fk in catalog.foreign_keys if fk.child_oid in touched or fk.parent_oid in touched]
    return hits, [(fk, fk.parent_oid not in touched or entirely_restored(fk.child_oid)) for fk in hits]


def relation_label(cur, oid: int) -> str:
    cur.execute("SELECT %s::regclass::text", (oid,))
    return cur.fetchone()[0]


def drop_foreign_keys(cur, fks: list[ForeignKey]) -> list[SavedForeignKey]:
    """Drop FKs for the load and return what re-adds them; re-adding validates every row, so a restore can
    never commit rows that break a foreign key, whatever order the tables come in. Two round trips in all."""
    if not fks:
        return []
    cur.execute(
        "SELECT f.oid, pg_get_constraintdef(f.oid), n.nspname, c.relname, f.child::regclass::text, "
        "f.parent::regclass::text FROM unnest(%s::oid[], %s::oid[], %s::oid[]) AS f(oid, child, parent) "
        "JOIN pg_class c ON c.oid = f.child JOIN pg_namespace n ON n.oid = c.relnamespace",
        ([fk.oid for fk in fks], [fk.child_oid for fk in fks], [fk.parent_oid for fk in fks]),
    )
    found = {oid: rest for oid, *rest in cur.fetchall()}
    saved: list[SavedForeignKey] = []
    for fk in fks:
        definition, schema, rel, child_label, parent_label = found[fk.oid]
        saved.append(SavedForeignKey(sql.Identifier(schema, rel), fk.name, definition, parent_label, child_label))
    run_all(cur, [sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(f.child, sql.Identifier(f.name))
                  for f in saved])
    return saved


def run_all(cur, statements: list[sql.Composable], per_round_trip: int = 500) -> None:
    """Several statements in one round trip each few hundred (a restore of a thousand small tables otherwise
    waits on a thousand round trips for its triggers, keys and sequences)."""
    for start in range(0, len(statements), per_round_trip):
        cur.execute(sql.SQL("; ").join(statements[start:start + per_round_trip]))


def drop_unvalidated_checks(cur, tables: list[Table]) -> list[SavedForeignKey]:
    """Drop the CHECK constraints added NOT VALID on the tables (or inherited from their ancestors) and return
    what re-adds them, still NOT VALID.

    Such a constraint does not hold for rows that predate it, and the database may keep those rows; but COPY
    checks every incoming row against every CHECK constraint, valid or not, so the restore of a database that
    held such rows failed. Re-adding with NOT VALID does not scan the table: the table's rows and the
    constraint's state are both as they were. An inherited constraint is dropped and re-added where it is
    defined (dropping it from a partition or child is not allowed)."""
    if not tables:
        return []
    cur.execute(
        """
        WITH RECURSIVE up(relid) AS (
            SELECT unnest(%s::oid[])
            UNION SELECT i.inhparent FROM pg_inherits i JOIN up ON i.inhrelid = up.relid
        )
        SELECT DISTINCT n.nspname, c.relname, con.conname, pg_get_constraintdef(con.oid), c.oid::regclass::text
        FROM pg_constraint con
        JOIN up ON con.conrelid = up.relid
        JOIN pg_class c ON c.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE con.contype = 'c' AND NOT con.convalidated AND con.coninhcount = 0
        ORDER BY 1, 2, 3
        """,
        ([t.oid for t in tables],),
    )
    saved: list[SavedForeignKey] = []
    for schema, rel, name, definition, label in cur.fetchall():
        table = sql.Identifier(schema, rel)
        cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table, sql.Identifier(name)))
        saved.append(SavedForeignKey(table, name, definition, label, label))
    return saved


@dataclass
class SavedIndex:
    table: sql.Composable
    name: str
    statement: str  # CREATE INDEX ... or the constraint's definition (ADD CONSTRAINT name <definition>)
    constraint: bool


def drop_indexes_for_load(cur, tables: list[Table]) -> list[SavedIndex]:
    """Drop the tables' indexes (with their PRIMARY KEY / UNIQUE / EXCLUDE constraints) before a bulk load and
    return what builds them again afterwards, as pg_restore does for a full restore.

    Building an index from the loaded table (one sort) costs less than inserting every row into it during COPY:
    measured on the benchmark (3 M rows), the server's load went from 13.4-14.0 s to 10.9-11.5 s including
    the 1.5 s of the two builds. The rebuilt indexes check uniqueness and exclusion over all the rows, as the
    load would have. Run after the FKs touching the tables were dropped (they depend on the referenced key).

    Kept as they are (maintained during the load): indexes of partitions or attached to a partitioned index,
    those that are invalid, clustered, the replica identity, in their own tablespace, commented, with per-column
    statistics targets, constraints whose index is named otherwise or has storage parameters (the constraint's
    definition omits them), tables the role does not own; and any index whose DROP fails (something else depends
    on it), thanks to a savepoint each."""
    if not tables:
        return []
    cur.execute(
        """
        SELECT n.nspname, t.relname, ic.relname, pg_get_indexdef(i.indexrelid), con.conname,
               pg_get_constraintdef(con.oid)
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_class t ON t.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
                                    AND con.contype IN ('p', 'u', 'x')
        WHERE i.indrelid = ANY(%s) AND t.relkind = 'r' AND NOT t.relispartition
          AND i.indisvalid AND i.indisready AND i.indislive AND NOT i.indisclustered AND NOT i.indisreplident
          AND ic.reltablespace = 0
          AND pg_has_role(t.relowner, 'USAGE')
          AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)
          AND obj_description(i.indexrelid, 'pg_class') IS NULL
          AND (con.oid IS NULL OR (con.conname = ic.relname AND ic.reloptions IS NULL
                                   AND obj_description(con.oid, 'pg_constraint') IS NULL))
          AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.indexrelid AND a.attstattarget > 0)
        ORDER BY 1, 2, con.contype NULLS LAST, 3
        """,
        ([t.oid for t in tables],),
    )
    saved: list[SavedIndex] = []
    for schema, rel, index, index_def, constraint, constraint_def in cur.fetchall():
        table = sql.Identifier(schema, rel)
        if constraint is not None:
            drop = sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table, sql.Identifier(constraint))
        else:
            drop = sql.SQL("DROP INDEX {}").format(sql.Identifier(schema, index))
        cur.execute("SAVEPOINT backup_tasks_drop_index")
        try:
            cur.execute(drop)
        except psycopg2.Error:  # e.g. a dependent object we did not foresee: keep the index, maintained
            cur.execute("ROLLBACK TO SAVEPOINT backup_tasks_drop_index")
            continue
        finally:
            cur.execute("RELEASE SAVEPOINT backup_tasks_drop_index")
        saved.append(SavedIndex(table, constraint or index, constraint_def if constraint else index_def,
                                constraint is not None))
    return saved


def rebuild_indexes(cur, saved: list[SavedIndex]) -> None:
    # In the order they were dropped: per table, its key constraints (PRIMARY KEY first), then its other indexes.
    run_all(cur, [sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(i.table, sql.Identifier(i.name))
                  + sql.SQL(i.statement) if i.constraint else sql.SQL(i.statement) for i in saved], 50)


def add_foreign_keys(cur, saved: list[SavedForeignKey]) -> None:
    run_all(cur, [sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(fk.child, sql.Identifier(fk.name))
                  + sql.SQL(fk.definition) for fk in saved], 50)


def disable_user_triggers(cur, catalog: Catalog, tables: list[Table]) -> list[tuple[Table, str, str]]:
    """Disable every enabled user trigger on the tables (they would rewrite restored rows or add audit rows)
    and return what to re-enable, each in its original mode."""
    changed = [(table, name, mode) for table in tables for name, mode in catalog.triggers.get(table.oid, [])
               if mode != "D"]
    run_all(cur, [sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(t.ident, sql.Identifier(name))
                  for t, name, _ in changed])
    return changed


def enable_triggers(cur, changed: list[tuple[Table, str, str]]) -> None:
    run_all(cur, [sql.SQL("ALTER TABLE {} " + _ENABLE[mode] + " {}").format(t.ident, sql.Identifier(name))
                  for t, name, mode in changed])


def lock_for_emptying(cur, tables: list[Table]) -> None:
    """The lock TRUNCATE takes, for every table empty_tables empties without an extension's filter, taken before
    anything else is changed: rows counted under it are the rows the restore removes, and a DELETE under it
    removes what TRUNCATE would."""
    lock_tables(cur, [t for t in tables if not t.filter], "ACCESS EXCLUSIVE")


# A table of at most this many bytes on disk, heap and TOAST (Table.data_bytes), is emptied by DELETE, not
# TRUNCATE. TRUNCATE gives a table (and each of its indexes and its TOAST table) new files, and the commit removes
# and syncs the old ones: on 1,000 tables of 200 rows, TRUNCATE and its commit took 1.3-5 s (growing as pg_class
# bloated), the same DELETEs 0.3-0.4 s. DELETE costs per row and per TOAST chunk instead, and leaves them for
# autovacuum: only worth it, and harmless, on a few pages. TOAST counts: a heap page can hold the pointers to
# rows of several MB each, whose DELETE would mark thousands of chunks dead.
DELETE_MAX_BYTES = 8 * 8192


def empty_tables(cur, tables: list[Table]) -> None:
    """Empty the tables, which the caller locked (lock_for_emptying): TRUNCATE (a few hundred per statement), or
    DELETE for tables of a few pages where that empties them the same way (_deletable); an extension's
    configuration table loses only the rows its filter selects (the others are the extension's own, which CREATE
    EXTENSION made and the backup left out)."""
    plain = [t for t in tables if not t.filter]
    small = [t for t in plain if t.data_bytes <= DELETE_MAX_BYTES]
    deleted = _deletable(cur, small)
    truncated = [t for t in plain if t.oid not in deleted]
    for start in range(0, len(truncated), 500):
        chunk = truncated[start:start + 500]
        cur.execute(sql.SQL("TRUNCATE ONLY {}").format(sql.SQL(", ").join(t.ident for t in chunk)))
    run_all(cur, [sql.SQL("DELETE FROM ONLY {}").format(t.ident) for t in plain if t.oid in deleted]
            + [sql.SQL("DELETE FROM ONLY {} {}").format(t.ident, sql.SQL(t.filter)) for t in tables if t.filter])


def _deletable(cur, tables: list[Table]) -> set[int]:
    """Those of the (locked) tables that a DELETE empties exactly as TRUNCATE would: no rule (DO INSTEAD rewrites
    a DELETE, not a TRUNCATE), no row-level security (a policy hides rows from a DELETE), no publication of
    deletes (a table without a replica identity refuses them), and a READ COMMITTED transaction (the DELETE's
    snapshot is then taken after the lock was granted and sees every committed row; an older transaction snapshot
    under a REPEATABLE READ default would miss rows committed before the lock); and this role may DELETE from it
    (a role granted TRUNCATE and not DELETE restored before)."""
    if not tables:
        return set()
    cur.execute("SELECT c.oid FROM pg_class c WHERE c.oid = ANY(%s::oid[]) AND NOT c.relhasrules "
                "AND NOT c.relrowsecurity AND has_table_privilege(c.oid, 'DELETE') "
                "AND NOT EXISTS (SELECT FROM pg_publication WHERE pubdelete) "
                "AND current_setting('transaction_isolation') = 'read committed'", ([t.oid for t in tables],))
    return {oid for (oid,) in cur.fetchall()}


def set_migration_version(cur, alembic: tuple[str, str] | None, version: str | None) -> bool:
    """Make alembic_version hold the backup's version. False when the database has no alembic_version table."""
    if alembic is None:
        return False
    ident = sql.Identifier(*alembic)
    cur.execute(sql.SQL("DELETE FROM {}").format(ident))
    for v in (version.split(",") if version else []):
        cur.execute(sql.SQL("INSERT INTO {} (version_num) VALUES (%s)").format(ident), (v,))
    return True


def set_sequences(cur, states: list[tuple[str, str, int, bool]]) -> None:
    """setval every sequence, in one statement."""
    if not states:
        return
    cur.execute("SELECT count(pg_catalog.setval(s::regclass, v, c)) FROM unnest(%s::text[], %s::bigint[], "
                "%s::bool[]) AS x(s, v, c)",
                ([sql.Identifier(schema, name).as_string(cur) for schema, name, _, _ in states],
                 [v for _, _, v, _ in states], [c for _, _, _, c in states]))


def owned_sequences(cur, tables: list[Table]) -> set[tuple[str, str]]:
    """(schema, name) of the sequences owned by the tables' columns (serial and identity columns)."""
    cur.execute(
        "SELECT n.nspname, c.relname FROM pg_depend d JOIN pg_class c ON c.oid = d.objid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE d.classid = 'pg_class'::regclass "
        "AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') AND c.relkind = 'S' "
        "AND d.refobjid = ANY(%s)", ([t.oid for t in tables],))
    return set(cur.fetchall())


@dataclass(frozen=True)
class MaterializedView:
    schema: str
    name: str
    may_refresh: bool  # the restoring role owns it (REFRESH needs that)

    @property
    def label(self) -> str:
        return table_key(self.schema, self.name)


def dependent_materialized_views(cur, tables: list[Table], ancestors: dict[int, set[int]]) -> list[MaterializedView]:
    """The populated materialized views that depend on the tables (or their partitioned ancestors), directly or
    through views and other materialized views, in the order to refresh them: each after everything it reads."""
    oids = {t.oid for t in tables}
    for t in tables:
        oids |= ancestors.get(t.oid, set())
    if not oids:
        return []
    cur.execute(
        """
        WITH RECURSIVE deps(relid, depth) AS (
            SELECT unnest(%s::oid[]), 0
          UNION
            SELECT r.ev_class, deps.depth + 1
            FROM deps
            JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = deps.relid
                            AND d.classid = 'pg_rewrite'::regclass
            JOIN pg_rewrite r ON r.oid = d.objid
            WHERE r.ev_class <> deps.relid AND deps.depth < 64
        )
        SELECT n.nspname, c.relname, pg_has_role(c.relowner, 'USAGE'), max(deps.depth)
        FROM deps JOIN pg_class c ON c.oid = deps.relid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'm' AND c.relispopulated
        GROUP BY n.nspname, c.relname, c.relowner
        ORDER BY max(deps.depth), 1, 2
        """,
        (list(oids),),
    )
    return [MaterializedView(schema, name, bool(owner)) for schema, name, owner, _ in cur.fetchall()]


def refresh_materialized_views(cur, views: list[MaterializedView]) -> None:
    for view in views:
        cur.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(sql.Identifier(view.schema, view.name)))


def check_deferred_constraints(cur) -> None:
    """Check every deferred constraint now rather than at COMMIT, which comes after the (non-transactional)
    sequences: a DEFERRABLE INITIALLY DEFERRED key on a table that kept its indexes failed only at COMMIT, and
    the sequences had already moved."""
    cur.execute("SET CONSTRAINTS ALL IMMEDIATE")


def sync_owned_sequences(cur, tables: list[Table], ancestors: dict[int, set[int]]) -> int:
    """For backups that record no sequence states (files in the seed's bare format): move every sequence owned
    by a column of the restored tables (serial, identity; on a partitioned or inheritance parent too) just past
    the values now in that column, or back to its start when there are none, so that the application's next
    INSERT does not collide with a restored row. Returns how many sequences were set."""
    oids = {t.oid for t in tables}
    for t in tables:
        oids |= ancestors.get(t.oid, set())
    if not oids:
        return 0
    cur.execute(
        """
        SELECT DISTINCT sn.nspname, s.relname, tn.nspname, t.relname, a.attname,
               q.seqincrement, q.seqstart, q.seqmin, q.seqmax
        FROM pg_depend d
        JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
        JOIN pg_namespace sn ON sn.oid = s.relnamespace
        JOIN pg_sequence q ON q.seqrelid = s.oid
        JOIN pg_class t ON t.oid = d.refobjid
        JOIN pg_namespace tn ON tn.oid = t.relnamespace
        JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
        WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
          AND d.deptype IN ('a', 'i') AND d.refobjid = ANY(%s)
        ORDER BY 1, 2
        """,
        (list(oids),),
    )
    owned = cur.fetchall()
    for seq_schema, seq_name, schema, table, column, increment, start, low, high in owned:
        ascending = increment > 0
        # Not FROM ONLY: a parent's sequence also numbers its partitions' and inheritance children's rows.
        cur.execute(sql.SQL("SELECT {}({}) FROM {}").format(
            sql.SQL("max" if ascending else "min"), sql.Identifier(column), sql.Identifier(schema, table)))
        value = cur.fetchone()[0]
        seq = sql.Identifier(seq_schema, seq_name).as_string(cur)
        if value is None or (value < start if ascending else value > start):
            cur.execute("SELECT pg_catalog.setval(%s::regclass, %s, false)", (seq, start))
        else:
            cur.execute("SELECT pg_catalog.setval(%s::regclass, %s, true)", (seq, min(max(int(value), low), high)))
    return len(owned)


def existing_sequences(cur) -> set[tuple[str, str]]:
    cur.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'S'")
    return set(cur.fetchall())


__all__ = ["ALEMBIC_TABLE"]
