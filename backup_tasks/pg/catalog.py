"""What the database holds: data tables, their columns, keys, foreign keys, triggers and sequences.

A "data table" is every ordinary table (relkind 'r') of every user schema, including unlogged tables, leaf
partitions, inheritance children and extensions' configuration tables (with their filter), each read FROM ONLY
itself so every row is stored exactly once. Partitioned parents hold no rows; views and temp tables hold none
that are ours; foreign tables, materialized views and the other tables of extensions are reported as not
included (read_not_included). `alembic_version` is metadata, not data.
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
    filter: str | None = None  # an extension configuration table's condition: only the rows it selects are data
    heap_pages: int = 0  # the table's pages now (pg_relation_size / block size): what a sequential scan reads
    data_bytes: int = 0  # heap and TOAST pages on disk, what a backup reads (no indexes; pg_table_size also stats
    # the free-space and visibility maps and opens the TOAST table: 25 ms more on 1,000 tables)

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


def read_catalog(cur) -> Catalog:
    """Every data table with its columns and primary key, the foreign keys, user triggers and sequences: six
    queries however many tables there are."""
    tables, alembic = _read_tables(cur)
    by_oid = {t.oid: t for t in tables}
    if by_oid:
        _read_columns(cur, by_oid)
        _read_primary_keys(cur, by_oid)
    return Catalog(tables, _read_foreign_keys(cur), _read_triggers(cur, list(by_oid)), _read_sequences(cur), alembic)


# Tables of extensions are created (and filled) by CREATE EXTENSION, except the extension's configuration tables
# (pg_extension_config_dump), which hold user data: those are backed up, with the extension's filter, as pg_dump
# does. extcondition is '' when the whole table is user data.
_CONFIG_TABLES = (
    "SELECT cfg.relid, nullif(cfg.cond, '') AS cond, e.extname FROM pg_extension e "
    "CROSS JOIN LATERAL unnest(e.extconfig, e.extcondition) AS cfg(relid, cond)"
)


def _read_tables(cur) -> tuple[list[Table], tuple[str, str] | None]:
    cur.execute(
        f"""
        SELECT c.oid, n.nspname, c.relname, c.relpersistence, greatest(c.reltuples, 0)::bigint, cfg.cond,
               pg_relation_size(c.oid), current_setting('block_size')::bigint,
               CASE WHEN c.reltoastrelid <> 0 THEN pg_relation_size(c.reltoastrelid) ELSE 0 END
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN ({_CONFIG_TABLES}) cfg ON cfg.relid = c.oid
        WHERE c.relkind = 'r' AND c.relpersistence IN ('p', 'u') AND {_USER_SCHEMA}
          AND ({_NOT_EXTENSION} OR cfg.relid IS NOT NULL)
        ORDER BY n.nspname, c.relname
        """
    )
    tables: list[Table] = []
    alembic = None
    for oid, schema, name, persistence, estimate, cond, heap_bytes, block_size, toast_bytes in cur.fetchall():
        if name == ALEMBIC_TABLE and alembic is None and schema == "public":
            alembic = (schema, name)
            continue
        heap_bytes = int(heap_bytes or 0)  # a relation's size is whole pages
        tables.append(Table(oid, schema, name, persistence, estimated_rows=int(estimate), filter=cond,
                            heap_pages=heap_bytes // int(block_size), data_bytes=heap_bytes + int(toast_bytes or 0)))
    if alembic is None:
        cur.execute(f"SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    f"WHERE c.relname = %s AND c.relkind = 'r' AND {_USER_SCHEMA} ORDER BY 1 LIMIT 1",
                    (ALEMBIC_TABLE,))
        row = cur.fetchone()
        if row:
            alembic = (row[0], ALEMBIC_TABLE)
            tables = [t for t in tables if (t.schema, t.name) != alembic]
    return tables, alembic


def _read_columns(cur, by_oid: dict[int, Table]) -> None:
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


def _read_primary_keys(cur, by_oid: dict[int, Table]) -> None:
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


def _read_foreign_keys(cur) -> list[ForeignKey]:
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
    return [ForeignKey(*row) for row in cur.fetchall()]


def _read_triggers(cur, oids: list[int]) -> dict[int, list[tuple[str, str]]]:
    cur.execute(
        "SELECT tgrelid, tgname, tgenabled FROM pg_trigger WHERE NOT tgisinternal AND tgrelid = ANY(%s) "
        "ORDER BY tgrelid, tgname",
        (oids or [0],),
    )
    triggers: dict[int, list[tuple[str, str]]] = {}
    for relid, name, enabled in cur.fetchall():
        triggers.setdefault(relid, []).append((name, enabled))
    return triggers


def _read_sequences(cur) -> list[Sequence]:
    cur.execute(
        f"""
        SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'S' AND c.relpersistence IN ('p', 'u') AND {_USER_SCHEMA}
          AND ({_NOT_EXTENSION} OR c.oid IN (SELECT relid FROM ({_CONFIG_TABLES}) cfg))
        ORDER BY n.nspname, c.relname
        """
    )
    return [Sequence(schema, name) for schema, name in cur.fetchall()]


@dataclass(frozen=True)
class NotIncluded:
    """Something that holds data and is not in the backup, and why (reported in the output and the metadata)."""

    kind: str
    name: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "reason": self.reason}


def read_not_included(cur) -> list[NotIncluded]:
    """Relations with data of their own that a backup leaves out: foreign tables (their rows live elsewhere),
    tables that belong to an extension and are not its configuration (CREATE EXTENSION makes them) and
    materialized views (derived data, which a restore refreshes)."""
    cur.execute(
        f"""
        SELECT c.relkind, n.nspname, c.relname, fs.srvname, e.extname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_foreign_table ft ON ft.ftrelid = c.oid
        LEFT JOIN pg_foreign_server fs ON fs.oid = ft.ftserver
        LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
        LEFT JOIN pg_extension e ON e.oid = d.refobjid
        WHERE {_USER_SCHEMA} AND c.relpersistence IN ('p', 'u')
          AND (c.relkind IN ('f', 'm') OR (c.relkind = 'r' AND e.oid IS NOT NULL
               AND c.oid NOT IN (SELECT relid FROM ({_CONFIG_TABLES}) cfg)))
        ORDER BY n.nspname, c.relname
        """
    )
    out = []
    for kind, schema, name, server, extension in cur.fetchall():
        key = table_key(schema, name)
        if kind == "f":
            out.append(NotIncluded("foreign table", key, f"its rows live on the foreign server {server!r}"))
        elif kind == "m":
            out.append(NotIncluded("materialized view", key, "derived from tables: a restore refreshes it"))
        else:
            out.append(NotIncluded("extension table", key,
                                   f"belongs to extension {extension!r}: CREATE EXTENSION makes and fills it"))
    return out


def unreadable_tables(cur, tables: list[Table]) -> list[str]:
    """`key (why)` for every table this role cannot read completely: no SELECT privilege, or row security that
    applies to it (with row_security=off PostgreSQL refuses to read such a table rather than return part of it).
    Checked before the first row is read, so a backup names every one of them at once."""
    if not tables:
        return []
    cur.execute(
        """
        SELECT c.oid,
               has_table_privilege(c.oid, 'SELECT') OR coalesce((SELECT bool_and(has_column_privilege(c.oid,
                   a.attnum, 'SELECT')) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
                   AND NOT a.attisdropped), false),
               c.relrowsecurity AND NOT r.rolsuper AND NOT r.rolbypassrls
                   AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE'))
        FROM pg_class c CROSS JOIN pg_roles r
        WHERE c.oid = ANY(%s) AND r.rolname = current_user
        """,
        ([t.oid for t in tables],),
    )
    keys = {t.oid: t.key for t in tables}
    out = []
    for oid, readable, row_security in sorted(cur.fetchall(), key=lambda r: keys[r[0]]):
        if not readable:
            out.append(f"{keys[oid]} (no SELECT privilege)")
        elif row_security:
            out.append(f"{keys[oid]} (row-level security applies to this role)")
    return out


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


def server_version(cur) -> str:
    cur.execute("SHOW server_version")
    return cur.fetchone()[0]
