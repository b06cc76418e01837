"""What the database holds: data tables, their columns, keys, foreign keys, triggers and sequences.

A "data table" is every ordinary table (relkind 'r') of every user schema, including unlogged tables, leaf
partitions and inheritance children, each read FROM ONLY itself so every row is stored exactly once.
Partitioned parents hold no rows; views, materialized views, temp tables and extension-owned tables are
not data. `alembic_version` is metadata, not data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg2 import sql

from ..tablekey import table_key

ALEMBIC_TABLE = "alembic_version"

# Types whose psycopg2 value is already exact in JSON (ints, booleans, text). Everything else is read as
# PostgreSQL's own text output (`col::text`), which round-trips every type losslessly.
NATIVE_TYPE_OIDS = frozenset({16, 20, 21, 23, 25, 1042, 1043})

_USER_SCHEMA = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'"
_NOT_EXTENSION = (
    "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
    "AND d.objid = c.oid AND d.deptype = 'e')"
)


@dataclass
class Column:
    name: str
    type_name: str  # format_type(): what the backup records and the restore compares
    type_oid: int
    generated: bool  # stored generated columns are recomputed, never stored or inserted
    not_null: bool = False

    @property
    def native(self) -> bool:
        return self.type_oid in NATIVE_TYPE_OIDS


@dataclass
class Table:
    oid: int
    schema: str
    name: str
    persistence: str
    columns: list[Column] = field(default_factory=list)
    primary_key: list[str] = field(default_factory=list)
    estimated_rows: int = 0

    @property
    def key(self) -> str:
        return table_key(self.schema, self.name)

    @property
    def ident(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.name)

    @property
    def data_columns(self) -> list[Column]:
        return [c for c in self.columns if not c.generated]


@dataclass
class ForeignKey:
    oid: int
    name: str
    child_oid: int
    parent_oid: int
    child_columns: list[str]
    parent_columns: list[str]
    deferrable: bool
    validated: bool


@dataclass
class Sequence:
    schema: str
    name: str

    @property
    def ident(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.name)


@dataclass
class Catalog:
    tables: list[Table]
    foreign_keys: list[ForeignKey]
    triggers: dict[int, list[tuple[str, str]]]  # table oid -> [(trigger name, tgenabled)] of user triggers
    sequences: list[Sequence]
    alembic: tuple[str, str] | None  # (schema, table) of alembic_version, if present

    def by_key(self) -> dict[str, Table]:
        return {t.key: t for t in self.tables}

    def by_oid(self) -> dict[int, Table]:
        return {t.oid: t for t in self.tables}


def read_catalog(cur) -> Catalog:
    cur.execute(
        f"""
        SELECT c.oid, n.nspname, c.relname, c.relpersistence, greatest(c.reltuples, 0)::bigint
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND c.relpersistence IN ('p', 'u') AND {_USER_SCHEMA} AND {_NOT_EXTENSION}
        ORDER BY n.nspname, c.relname
        """
    )
    tables: list[Table] = []
    alembic = None
    for oid, schema, name, persistence, estimate in cur.fetchall():
        if name == ALEMBIC_TABLE and alembic is None and schema == "public":
            alembic = (schema, name)
            continue
        tables.append(Table(oid, schema, name, persistence, estimated_rows=int(estimate)))
    if alembic is None:
        cur.execute(f"SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    f"WHERE c.relname = %s AND c.relkind = 'r' AND {_USER_SCHEMA} ORDER BY 1 LIMIT 1",
                    (ALEMBIC_TABLE,))
        row = cur.fetchone()
        if row:
            alembic = (row[0], ALEMBIC_TABLE)
            tables = [t for t in tables if (t.schema, t.name) != alembic]
    by_oid = {t.oid: t for t in tables}

    if by_oid:
        cur.execute(
            """
            SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid,
                   a.attgenerated <> '', a.attnotnull
            FROM pg_attribute a
            WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attrelid, a.attnum
            """,
            (list(by_oid),),
        )
        for relid, name, type_name, type_oid, generated, not_null in cur.fetchall():
            by_oid[relid].columns.append(Column(name, type_name, type_oid, generated, not_null))
        cur.execute(
            """
            SELECT con.conrelid, array_agg(a.attname ORDER BY k.ord)
            FROM pg_constraint con
            CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
            JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
            WHERE con.contype = 'p' AND con.conrelid = ANY(%s)
            GROUP BY con.oid, con.conrelid
            """,
            (list(by_oid),),
        )
        for relid, cols in cur.fetchall():
            by_oid[relid].primary_key = list(cols)

    cur.execute(
        """
        SELECT con.oid, con.conname, con.conrelid, con.confrelid,
               (SELECT array_agg(a.attname ORDER BY k.ord) FROM unnest(con.conkey) WITH ORDINALITY k(n, ord)
                  JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n),
               (SELECT array_agg(a.attname ORDER BY k.ord) FROM unnest(con.confkey) WITH ORDINALITY k(n, ord)
                  JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n),
               con.condeferrable, con.convalidated
        FROM pg_constraint con
        WHERE con.contype = 'f' AND con.conparentid = 0
        """
    )
    fks = [ForeignKey(*row) for row in cur.fetchall()]

    cur.execute(
        "SELECT tgrelid, tgname, tgenabled FROM pg_trigger WHERE NOT tgisinternal AND tgrelid = ANY(%s) "
        "ORDER BY tgrelid, tgname",
        (list(by_oid) or [0],),
    )
    triggers: dict[int, list[tuple[str, str]]] = {}
    for relid, name, enabled in cur.fetchall():
        triggers.setdefault(relid, []).append((name, enabled))

    cur.execute(
        f"""
        SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'S' AND c.relpersistence IN ('p', 'u') AND {_USER_SCHEMA} AND {_NOT_EXTENSION}
        ORDER BY n.nspname, c.relname
        """
    )
    sequences = [Sequence(schema, name) for schema, name in cur.fetchall()]
    return Catalog(tables, fks, triggers, sequences, alembic)


def read_sequence_states(cur, sequences: list[Sequence]) -> list[tuple[Sequence, int, bool]]:
    """last_value and is_called of every sequence, a few hundred per query."""
    out: list[tuple[Sequence, int, bool]] = []
    for start in range(0, len(sequences), 200):
        chunk = sequences[start:start + 200]
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}::int, last_value, is_called FROM {}").format(sql.Literal(i), s.ident)
            for i, s in enumerate(chunk)
        )
        cur.execute(query)
        for i, last_value, is_called in sorted(cur.fetchall()):
            out.append((chunk[i], int(last_value), bool(is_called)))
    return out


def read_migration_version(cur, alembic: tuple[str, str] | None) -> str | None:
    if alembic is None:
        return None
    cur.execute(sql.SQL("SELECT version_num FROM {} ORDER BY 1").format(sql.Identifier(*alembic)))
    versions = [r[0] for r in cur.fetchall()]
    return ",".join(versions) if versions else None


def is_superuser(cur) -> bool:
    cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    row = cur.fetchone()
    return bool(row and row[0])


def server_version(cur) -> str:
    cur.execute("SHOW server_version")
    return cur.fetchone()[0]
