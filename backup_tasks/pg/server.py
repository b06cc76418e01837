"""What a server holds beyond one database's rows: the databases a role may back up (databases.py's discovery),
and what a restore drill reads of its scratch database after the restore (server version, sequences, migration)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg2

from ..errors import DatabaseError
from .catalog import read_catalog, read_migration_version, read_sequence_states, server_version
from .connection import connection, pg_error_message

# Templates are copies for CREATE DATABASE, and a database that refuses connections cannot be read.
_LIST = """
SELECT datname FROM pg_database
WHERE NOT datistemplate AND datallowconn AND has_database_privilege(datname, 'CONNECT')
ORDER BY datname
"""


def list_databases(url: str) -> list[str]:
    """The names of the non-template databases on the server of `url` that its role may connect to."""
    with connection(url, application="backup_tasks_discovery") as conn:
        try:
            with conn.cursor() as cur:
                cur.execute(_LIST)
                return [row[0] for row in cur.fetchall()]
        except psycopg2.Error as exc:
            raise DatabaseError(f"cannot list the databases: {pg_error_message(exc)}") from None


@dataclass(frozen=True)
class DatabaseFacts:
    server_version: str
    migration_version: str | None
    sequences: dict[tuple[str, str], tuple[int, bool]]  # (schema, name) -> (last_value, is_called)


def database_facts(url: str) -> DatabaseFacts:
    """The database's server version, migration version and every sequence's state, in one read-only transaction."""
    with connection(url, application="backup_tasks_drill") as conn:
        try:
            with conn.cursor() as cur:
                catalog = read_catalog(cur)
                states = read_sequence_states(cur, catalog.sequences)
                facts = DatabaseFacts(server_version(cur), read_migration_version(cur, catalog.alembic),
                                      {(s.schema, s.name): (last, called) for s, last, called in states})
            return facts
        except psycopg2.Error as exc:
            raise DatabaseError(f"cannot read the database's state: {pg_error_message(exc)}") from None
