"""What a server holds beyond one database: the databases a role may back up (databases.py's discovery)."""

from __future__ import annotations

import psycopg2

from ..errors import DatabaseError
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
