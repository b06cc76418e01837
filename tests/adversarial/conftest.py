"""Fixtures of the adversarial suite (issue 7): one seeded database and a real backup of it per module."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from backup_tasks.core import create_backup
from tests.oracle import snapshot

from .support import drop_database, gunzip, new_database


@dataclass
class Seeded:
    name: str
    url: str
    backup: Path  # a real backup of the seeded database (no sidecar: copies and mutations carry none)
    text: str  # its decompressed document
    before: dict  # the oracle's snapshot of the seeded database


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Seeded:
    """The small seeded database of support.SCHEMA and a backup of it, shared by a module's tests. Tests that
    change the database put it back (or assert that nothing changed, which is the point of most of them)."""
    name, url = new_database()
    out = tmp_path_factory.mktemp("seeded")
    path = create_backup(out, database_url=url)
    path.with_name(path.name + ".sha256").unlink(missing_ok=True)
    try:
        yield Seeded(name, url, path, gunzip(path).decode(), snapshot(url))
    finally:
        drop_database(name)
