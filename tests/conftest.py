"""Shared fixtures: throwaway databases on the real PostgreSQL, settings from the environment."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from backup_tasks.settings import reset_settings_cache

ADMIN_URL = os.environ.get("TEST_ADMIN_DATABASE_URL", "postgresql://postgres@localhost:5432/postgres")


def _admin():
    conn = psycopg2.connect(ADMIN_URL)
    conn.autocommit = True
    return conn


def db_url(name: str, user: str = "postgres") -> str:
    base = ADMIN_URL.rsplit("/", 1)[0]
    if user != "postgres":
        base = base.replace("postgres@", f"{user}@", 1)
    return f"{base}/{name}"


@pytest.fixture
def make_db():
    """Factory: make_db() -> (name, url) of a new empty database, dropped after the test."""
    created: list[str] = []

    def factory(owner: str | None = None) -> tuple[str, str]:
        name = f"bt_test_{uuid.uuid4().hex[:10]}"
        conn = _admin()
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"' + (f' OWNER "{owner}"' if owner else ""))
        conn.close()
        created.append(name)
        return name, db_url(name)

    yield factory
    conn = _admin()
    with conn.cursor() as cur:
        for name in created:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture
def backup_dir(tmp_path: Path) -> Path:
    d = tmp_path / "backups"
    d.mkdir()
    return d


@pytest.fixture
def settings_env(monkeypatch, backup_dir):
    """Point the settings at a test database and backup directory: settings_env(url)."""

    def apply(url: str, **extra: str) -> None:
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.setenv("BACKUP_DIR", str(backup_dir))
        for k, v in extra.items():
            monkeypatch.setenv(k, v)
        reset_settings_cache()

    yield apply
    reset_settings_cache()


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll until predicate() returns something truthy and return it; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def query(url: str, statement: str, params=None) -> list[tuple]:
    """The rows of one statement, on a connection of its own, rolled back: reading the database independently."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.rollback()
        conn.close()


def run_sql(url: str, statements: str) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statements)
    finally:
        conn.close()


@pytest.fixture
def owner_role():
    """A LOGIN role without superuser; dropped afterwards, with every database it owns."""
    role = f"bt_owner_{uuid.uuid4().hex[:8]}"
    conn = _admin()
    with conn.cursor() as cur:
        cur.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE')
    conn.close()
    yield role
    conn = _admin()
    with conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = %s)",
                    (role,))
        for (name,) in cur.fetchall():
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'DROP ROLE IF EXISTS "{role}"')
    conn.close()
