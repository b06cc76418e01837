"""The statements a restore runs inside its one transaction, besides COPY."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg2 import sql

from .catalog import ALEMBIC_TABLE, Catalog, ForeignKey, Table

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
    """Each table's partitioned/inheritance ancestors (an FK on a partitioned parent covers its leaves)."""
    if not tables:
        return {}
    cur.execute(
        "SELECT t.oid, a.relid FROM unnest(%s::oid[]) AS t(oid) "
        "CROSS JOIN LATERAL pg_partition_ancestors(t.oid) AS a(relid) WHERE a.relid <> t.oid",
        ([t.oid for t in tables],),
    )
    out: dict[int, set[int]] = {t.oid: set() for t in tables}
    for oid, ancestor in cur.fetchall():
        out[oid].add(ancestor)
    return out


def relevant_foreign_keys(catalog: Catalog, restored: list[Table], ancestors: dict[int, set[int]]) -> tuple[
        list[ForeignKey], list[tuple[ForeignKey, bool]]]:
    """FKs touching the restored tables, and for each whether its referencing side is entirely restored."""
    covered = {t.oid for t in restored}
    for t in restored:
        covered |= ancestors.get(t.oid, set())
    hits = [fk for fk in catalog.foreign_keys if fk.child_oid in covered or fk.parent_oid in covered]
    return hits, [(fk, fk.child_oid in covered) for fk in hits]


def relation_label(cur, oid: int) -> str:
    cur.execute("SELECT %s::regclass::text", (oid,))
    return cur.fetchone()[0]


def drop_foreign_keys(cur, fks: list[ForeignKey]) -> list[SavedForeignKey]:
    """Drop FKs for the load and return what re-adds them; re-adding validates every row, so a restore can
    never commit rows that break a foreign key, whatever order the tables come in."""
    saved: list[SavedForeignKey] = []
    for fk in fks:
        cur.execute(
            "SELECT pg_get_constraintdef(%s), n.nspname, c.relname, %s::regclass::text, %s::regclass::text "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s",
            (fk.oid, fk.child_oid, fk.parent_oid, fk.child_oid),
        )
        definition, schema, rel, child_label, parent_label = cur.fetchone()
        child = sql.Identifier(schema, rel)
        cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(child, sql.Identifier(fk.name)))
        saved.append(SavedForeignKey(child, fk.name, definition, parent_label, child_label))
    return saved


def add_foreign_keys(cur, saved: list[SavedForeignKey]) -> None:
    for fk in saved:
        cur.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(fk.child, sql.Identifier(fk.name))
                    + sql.SQL(fk.definition))


def disable_user_triggers(cur, catalog: Catalog, tables: list[Table]) -> list[tuple[Table, str, str]]:
    """Disable every enabled user trigger on the tables (they would rewrite restored rows or add audit rows)
    and return what to re-enable, each in its original mode."""
    changed: list[tuple[Table, str, str]] = []
    for table in tables:
        for name, mode in catalog.triggers.get(table.oid, []):
            if mode == "D":
                continue
            cur.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(table.ident, sql.Identifier(name)))
            changed.append((table, name, mode))
    return changed


def enable_triggers(cur, changed: list[tuple[Table, str, str]]) -> None:
    for table, name, mode in changed:
        cur.execute(sql.SQL("ALTER TABLE {} " + _ENABLE[mode] + " {}").format(table.ident, sql.Identifier(name)))


def truncate(cur, tables: list[Table]) -> None:
    for start in range(0, len(tables), 500):
        chunk = tables[start:start + 500]
        cur.execute(sql.SQL("TRUNCATE ONLY {}").format(sql.SQL(", ").join(t.ident for t in chunk)))


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
    for schema, name, last_value, is_called in states:
        cur.execute("SELECT pg_catalog.setval(%s::regclass, %s, %s)",
                    (sql.Identifier(schema, name).as_string(cur), last_value, is_called))


def existing_sequences(cur) -> set[tuple[str, str]]:
    cur.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'S'")
    return set(cur.fetchall())


__all__ = ["ALEMBIC_TABLE"]
