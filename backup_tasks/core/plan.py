"""Matching a backup's tables against the database before anything is changed."""

from __future__ import annotations

from dataclasses import dataclass

from ..archive.reader import Contents, TableHeader
from ..errors import SchemaMismatchError, UsageError
from ..pg.catalog import Catalog, Table


@dataclass
class TablePlan:
    header: TableHeader  # from the backup
    table: Table  # in the database


@dataclass
class RestorePlan:
    loads: dict[str, TablePlan]  # backup key -> target, for the tables to restore
    emptied: list[Table]  # database tables not in the backup: truncated and left empty (as the seed says)

    @property
    def targets(self) -> list[Table]:
        return [p.table for p in self.loads.values()] + self.emptied


def plan_restore(contents: Contents, catalog: Catalog, only: list[str] | None = None) -> RestorePlan:
    """Every mismatch is collected and reported at once, by name, before the database is touched."""
    selected = None
    if only:
        in_backup = {t.key for t in contents.tables}
        unknown = [k for k in only if k not in in_backup]
        if unknown:
            raise UsageError(f"not in the backup: {', '.join(map(repr, unknown))}",
                             hint="Table names as `backupctl diff FILE` prints them (schema.table outside public).")
        selected = set(only)

    loads, problems = _match(contents, catalog, selected)
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise SchemaMismatchError("the database schema does not match the backup: " + "; ".join(shown))

    backup_keys = {t.key for t in contents.tables}
    emptied = [] if selected is not None else [t for t in catalog.tables if t.key not in backup_keys]
    return RestorePlan(loads, emptied)


def schema_mismatches(contents: Contents, catalog: Catalog) -> list[str]:
    """Every way the database's tables and columns differ from the backup's, by name (empty: a restore fits)."""
    return _match(contents, catalog, None)[1]


def _match(contents: Contents, catalog: Catalog, selected: set[str] | None) -> tuple[dict[str, TablePlan], list[str]]:
    db_tables = catalog.by_key()
    problems: list[str] = []
    loads: dict[str, TablePlan] = {}
    for header in contents.tables:
        if selected is not None and header.key not in selected:
            continue
        table = db_tables.get(header.key)
        if table is None:
            problems.append(f"table {header.key!r} is in the backup but not in the database")
            continue
        db_cols = {c.name: c for c in table.columns}
        for i, name in enumerate(header.columns):
            col = db_cols.get(name)
            if col is None:
                problems.append(f"column {header.key}.{name} is in the backup but not in the database")
            elif col.generated:
                problems.append(f"column {header.key}.{name} is a generated column in the database")
            elif header.column_types is not None and header.column_types[i] != col.type_name:
                problems.append(f"column {header.key}.{name} is {header.column_types[i]} in the backup "
                                f"but {col.type_name} in the database")
        for col in table.data_columns:
            if col.name not in header.columns:
                problems.append(f"column {header.key}.{col.name} is in the database but not in the backup")
        loads[header.key] = TablePlan(header, table)
    return loads, problems
