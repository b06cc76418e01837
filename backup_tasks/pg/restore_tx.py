"""A restore's one transaction, in pg_restore's phases: open (what the database holds) → prepare (triggers, keys,
emptied tables, migration version, large objects) → load (one COPY per table) → finish (indexes, keys, views,
sequences, commit).

The caller (core/restore.py) decides what to restore; this object runs the statements and turns every failure of
PostgreSQL into a RestoreError, rolling back: nothing is ever half done. The order inside `finish` matters:
setval is not transactional, so it runs last, after every check that can still fail (deferred constraints too).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg2

from ..errors import BackupError, InvalidBackupError, RestoreError, SchemaMismatchError, UsageError
from ..progress import Progress, ProgressFn
from . import largeobjects as lo
from . import restore_ops as ops
from .catalog import Catalog, ForeignKey, Table, read_catalog, read_migration_version
from .connection import connect, pg_error_message, privilege_hint
from .copy_in import TableLoad, run_copy_pipeline
from .counts import count_rows


@dataclass
class Prepared:
    """What prepare() changed, so that finish() can put it back."""

    triggers: list = field(default_factory=list)
    foreign_keys: list = field(default_factory=list)
    checks: list = field(default_factory=list)
    indexes: list = field(default_factory=list)
    large_objects: bool = False
    large_objects_removed: int = 0


@dataclass
class Finished:
    sequences_set: int = 0
    views_refreshed: list[str] = field(default_factory=list)
    views_not_refreshed: list[str] = field(default_factory=list)  # owned by another role
    large_objects: lo.LargeObjectsWritten | None = None
    large_objects_removed: int = 0
    phase_s: dict[str, float] = field(default_factory=dict)  # seconds per step after the rows


class RestoreTransaction:
    def __init__(self, conn, lock_timeout_s: float):
        self.conn = conn
        self.cur = conn.cursor()
        with self.statements("reading the database's tables"):
            ops.lock_timeout(self.cur, lock_timeout_s)
            self.catalog: Catalog = read_catalog(self.cur)
            self.migration_version = read_migration_version(self.cur, self.catalog.alembic)
            self.ancestors = ops.partition_ancestors(self.cur, self.catalog.tables)  # all: relevant_foreign_keys
        self.prepared = Prepared()
        self.migration_set = False
        self.large_objects_copy = None  # the COPY into the staging table, once prepare() made it

    @contextmanager
    def statements(self, what: str) -> Iterator[None]:
        """PostgreSQL's errors as RestoreErrors that say what was being done; the transaction is rolled back."""
        try:
            yield
        except psycopg2.Error as exc:
            hint = privilege_hint(exc)
            raise RestoreError(f"restore failed while {what} and was rolled back: {pg_error_message(exc)}",
                               hint=f"Nothing was changed. {hint}" if hint else None) from None

    # --- what the restore may touch -------------------------------------------------------------------
    def sequence_states(self, recorded: list[tuple[str, str, int, bool]], tables: list[Table],
                        partial: bool) -> list[tuple[str, str, int, bool]]:
        """The recorded sequence states a restore sets: all of them (each must exist here), or for a partial
        restore those owned by the restored tables."""
        with self.statements("reading the sequences"):
            if partial:
                owned = ops.owned_sequences(self.cur, tables)
                return [s for s in recorded if (s[0], s[1]) in owned]
            existing = ops.existing_sequences(self.cur)
        missing = [f"{s}.{n}" for s, n, _, _ in recorded if (s, n) not in existing]
        if missing:
            raise SchemaMismatchError("the database schema does not match the backup: sequence(s) missing: "
                                      + ", ".join(missing[:20]))
        return recorded

    def refuse_broken_references(self, targets: list[Table]) -> None:
        """A partial restore may not empty a table that a table left as it is references."""
        _, coverage = ops.relevant_foreign_keys(self.catalog, targets, self.ancestors)
        broken = []
        with self.statements("reading the foreign keys"):
            for fk, child_restored in coverage:
                if not child_restored:
                    broken.append(f"{ops.relation_label(self.cur, fk.child_oid)} references "
                                  f"{ops.relation_label(self.cur, fk.parent_oid)} ({fk.name})")
        if broken:
            raise UsageError("restoring only these tables would break foreign keys: " + "; ".join(broken),
                             hint="Add the referencing tables with more --table options, or restore the whole backup.")

    def materialized_views(self, targets: list[Table]) -> list[ops.MaterializedView]:
        with self.statements("reading the materialized views"):
            return ops.dependent_materialized_views(self.cur, targets, self.ancestors)

    # --- the phases -----------------------------------------------------------------------------------
    def prepare(self, targets: list[Table], *, migration_version: Any = None, set_migration: bool = False,
                large_objects: bool = False, count: bool = False) -> tuple[dict[str, int], int] | None:
        """The targets locked as TRUNCATE locks them, triggers off, keys that touch the targets dropped, the
        targets emptied, alembic_version set (a full restore), the database's large objects removed (when the
        restore replaces them). count: first count, under that lock, the rows of each target and the large
        objects this replaces, returned (a restore's counts preface: no second session, catalog read or
        snapshot)."""
        cur, p = self.cur, self.prepared
        fks: list[ForeignKey] = ops.relevant_foreign_keys(self.catalog, targets, self.ancestors)[0]
        counted = None
        with self.statements("preparing the tables"):
            ops.lock_for_emptying(cur, targets)
            if count:
                counted = count_rows(cur, targets), lo.count_large_objects(cur)
            p.triggers = ops.disable_user_triggers(cur, self.catalog, targets)
            p.foreign_keys = ops.drop_foreign_keys(cur, fks)
            p.checks = ops.drop_unvalidated_checks(cur, targets)
            ops.empty_tables(cur, targets)
            self.migration_set = set_migration and ops.set_migration_version(cur, self.catalog.alembic,
                                                                               migration_version)
            if large_objects:
                p.large_objects = True
                p.large_objects_removed = lo.unlink_all(cur)
                self.large_objects_copy = lo.create_staging(cur)
        return counted

    def load(self, tables: Iterable[tuple[TableLoad, Iterator[tuple[bytes, Any]]]],
             on_chunk: Callable[[Any], None] | None, on_table: Callable[[TableLoad], None] | None) -> None:
        """One COPY per table, the rows produced by `tables` in a thread of its own. A table marked `big` has its
        indexes dropped just before its COPY and built again in finish()."""
        def before_table(load: TableLoad) -> None:
            if load.big:
                self.prepared.indexes.extend(ops.drop_indexes_for_load(self.cur, [load.table]))

        with self.statements("loading the rows"):
            run_copy_pipeline(self.cur, tables, on_table=on_table, on_chunk=on_chunk, before_table=before_table)

    def finish(self, sequences: list[tuple[str, str, int, bool]] | None, restored: list[Table],
               views: list[ops.MaterializedView], progress: ProgressFn,
               expected_large_objects: int | None = None,
               before_commit: Callable[[], None] | None = None) -> Finished:
        """Indexes, foreign keys and checks back (each validated), triggers back in their modes, large objects
        written, materialized views refreshed, deferred constraints checked, sequences set, commit."""
        cur, p, done = self.cur, self.prepared, Finished()
        if p.indexes:
            with self._phase(done, progress, "indexes", f"rebuilding {_count(p.indexes, 'index', 'indexes')}"):
                ops.rebuild_indexes(cur, p.indexes)
        if p.foreign_keys or p.checks:
            with self._phase(done, progress, "foreign_keys",
                             f"validating {_count(p.foreign_keys, 'foreign key', 'foreign keys')}"):
                ops.add_foreign_keys(cur, p.foreign_keys)
                ops.add_foreign_keys(cur, p.checks)  # same shape: ALTER TABLE … ADD CONSTRAINT … NOT VALID
        with self.statements("enabling triggers"):
            ops.enable_triggers(cur, p.triggers)
        if p.large_objects:
            with self._phase(done, progress, "large_objects", "writing large objects"):
                done.large_objects = lo.write_from_staging(cur)
                done.large_objects_removed = p.large_objects_removed
            _check_objects(done.large_objects, expected_large_objects)
        may = [v for v in views if v.may_refresh]
        done.views_not_refreshed = [v.label for v in views if not v.may_refresh]  # REFRESH needs ownership
        if may:
            what = _count(may, "materialized view", "materialized views")
            with self._phase(done, progress, "views", f"refreshing {what}"):
                ops.refresh_materialized_views(cur, may)
            done.views_refreshed = [v.label for v in may]
        with self.statements("checking deferred constraints and setting sequences"):
            ops.check_deferred_constraints(cur)
            # setval is not transactional: last, once nothing but the commit can fail.
            if sequences is None:  # the file records no sequence states: derive them from the restored rows
                done.sequences_set = ops.sync_owned_sequences(cur, restored, self.ancestors)
            else:
                ops.set_sequences(cur, sequences)
                done.sequences_set = len(sequences)
        if before_commit is not None:
            before_commit()  # raises to roll back (a BackupError: the restore's caller decides)
        with self._phase(done, progress, "commit", "committing"):
            self.conn.commit()
        return done

    @contextmanager
    def _phase(self, done: Finished, progress: ProgressFn, name: str, message: str) -> Iterator[None]:
        """One step after the rows: announced (the bar would otherwise sit at 100 % with nothing said), timed."""
        progress(Progress("restore", message=message))
        started = time.monotonic()
        with self.statements(message):
            yield
        done.phase_s[name] = round(time.monotonic() - started, 3)

    def rollback(self) -> None:
        """Roll back. A connection that died (terminated by the server, network gone) raised InterfaceError here;
        its transaction ended with it, so there is nothing to undo."""
        try:
            self.conn.rollback()
        except psycopg2.Error:
            pass


def _count(items: list, one: str, many: str) -> str:
    return f"{len(items)} {one if len(items) == 1 else many}"


def _check_objects(written: lo.LargeObjectsWritten, expected: int | None) -> None:
    if expected is not None and written.objects != expected:
        raise InvalidBackupError(f"the backup's metadata lists {expected} large objects but its data holds "
                                 f"{written.objects}; nothing was restored")


@contextmanager
def restore_transaction(url: str, lock_timeout_s: float) -> Iterator[RestoreTransaction]:
    """A RestoreTransaction on a new connection; rolled back unless finish() committed, whatever happens."""
    conn = connect(url)
    try:
        tx = RestoreTransaction(conn, lock_timeout_s)
        try:
            yield tx
        except BaseException:
            tx.rollback()
            raise
    finally:
        try:
            conn.close()
        except psycopg2.Error:
            pass


__all__ = ["BackupError", "RestoreTransaction", "TableLoad", "restore_transaction"]
