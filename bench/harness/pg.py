"""Where the PostgreSQL server is, and the few statements the harness itself runs (psycopg2, autocommit)."""

from __future__ import annotations

import os
import subprocess
from urllib.parse import urlsplit

import psycopg2
from procfs import parent


class HarnessError(RuntimeError):
    """The harness cannot go on (a tool failed, a dataset cannot be built): reported, exit status 2."""


class Pg:
    """A server given by a URL without database name; pg tools get it through PG* variables."""

    def __init__(self, base_url: str):
        parts = urlsplit(base_url)
        self.base = base_url.rstrip("/")
        if parts.path not in ("", "/"):
            self.base = base_url[: base_url.rfind("/")]
        self.env = dict(os.environ)
        for var, value in (("PGHOST", parts.hostname), ("PGPORT", parts.port), ("PGUSER", parts.username),
                           ("PGPASSWORD", parts.password)):
            if value:
                self.env[var] = str(value)
        self.has_password = bool(parts.password)

    def url(self, db: str) -> str:
        return f"{self.base}/{db}"

    def connect(self, db: str = "postgres"):
        conn = psycopg2.connect(self.url(db))
        conn.autocommit = True
        return conn

    def execute(self, db: str, statement: str, params=None) -> list:
        conn = self.connect(db)
        try:
            with conn.cursor() as cur:
                cur.execute(statement, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def value(self, db: str, statement: str, params=None):
        return self.execute(db, statement, params)[0][0]

    def exists(self, db: str) -> bool:
        return bool(self.execute("postgres", "SELECT 1 FROM pg_database WHERE datname = %s", (db,)))

    def drop(self, db: str) -> None:
        self.execute("postgres", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

    def create(self, db: str) -> None:
        self.drop(db)
        self.execute("postgres", f'CREATE DATABASE "{db}"')

    def tool(self, *cmd: str, input: str | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(cmd), env=self.env, input=input, check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            raise HarnessError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid, when the server runs on this machine (its backends are then in /proc)."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                pid = parent(cur.fetchone()[0])  # while the connection, and so its backend, is still open
        finally:
            conn.close()
        return pid if pid and pid > 1 else None

    def user_tables(self, db: str) -> list[str]:
        rows = self.execute(db, "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                                "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1")
        return [r[0] for r in rows]

    def truncate_sql(self, db: str) -> str:
        return "TRUNCATE " + ", ".join(self.user_tables(db))

    def checkpoint(self) -> None:
        self.execute("postgres", "CHECKPOINT")
