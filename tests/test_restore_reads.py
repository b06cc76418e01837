"""Issue 14.1: `restore FILE --yes` reads the backup's rows once. Nobody confirms, so no detailed diff is computed: the
preface's counts come from the restore itself (the rows it loaded, the database's rows it replaced). Counted in the
command's own process (every open of the backup file and the bytes read through it), not inferred from timings.

What --yes reads, by design: the SHA-256 pass (a tampered file is refused before the first statement runs, so the
database is untouched rather than rolled back; hashing runs at ~1 GB/s, a few per cent of a restore's time), a
bounded read of the head for the metadata, and the restore's one pass. No diff pass, no counting pass: the preface's
database counts are taken in the restore's transaction before it empties the tables, the backup's are the rows it
loaded."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_sql
from tests.oracle import assert_same, snapshot

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # 600,000 rows: a file large enough that a head read and a pass differ

# Runs backupctl in this interpreter with builtins.open wrapped for paths ending in ".gz" (the backup; its .sha256
# and .manifest.json sidecars are other names): each open is recorded with the bytes read through it (counted at
# the raw file, under any buffering or decompression), and the list is printed when the command exits.
AUDIT = """
import builtins, io, os, sys
opened = []
class Counted(io.FileIO):
    def readinto(self, b):
        n = super().readinto(b)
        opened[self.slot][1] += n or 0
        return n
    def readall(self):
        data = super().readall()
        opened[self.slot][1] += len(data)
        return data
_open = builtins.open
def counting_open(file, mode="r", *args, **kwargs):
    if isinstance(file, (str, bytes, os.PathLike)) and os.fsdecode(file).endswith(".gz") and mode == "rb":
        raw = Counted(file, "rb")
        raw.slot = len(opened)
        opened.append([os.fsdecode(file), 0])
        return io.BufferedReader(raw)
    return _open(file, mode, *args, **kwargs)
builtins.open = counting_open
from backup_tasks.cli import main
sys.argv = ["backupctl", *sys.argv[1:]]
try:
    main()
finally:
    sys.stderr.write("OPENED " + repr(opened) + "\\n")
"""


def _audited(args: list[str], url: str, backup_dir: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "S3_", "BACKUP_"))}
    env.update(DATABASE_URL=url, BACKUP_DIR=str(backup_dir), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-c", AUDIT, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    line = next(line for line in proc.stderr.splitlines() if line.startswith("OPENED "))
    return proc, ast.literal_eval(line[len("OPENED "):])


# What reading the metadata may cost: the head of the file through one buffered read of the decompressor.
HEAD_READ = 1 << 20


def _shop(url: str) -> None:
    run_sql(url, """
        CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
        CREATE TABLE orders (id int PRIMARY KEY, customer int REFERENCES customers, total numeric(10,2));
        INSERT INTO customers SELECT i, 'c' || i FROM generate_series(1, 2000) i;
        INSERT INTO orders SELECT i, 1 + i % 2000, i * 1.5 FROM generate_series(1, 600000) i;
        SELECT lo_from_bytea(0, 'attachment');
    """)


def _backup(url: str, backup_dir: Path) -> Path:
    proc, _ = _audited(["create", "--local"], url, backup_dir)
    assert proc.returncode == 0, proc.stderr
    (path,) = backup_dir.glob("*.gz")
    return path


def test_restore_yes_opens_the_backup_once_and_prints_the_counts(make_db, tmp_path):
    _, url = make_db()
    _shop(url)
    path = _backup(url, tmp_path)
    before = snapshot(url)
    run_sql(url, "DELETE FROM orders WHERE id <= 300; UPDATE customers SET name = 'x' WHERE id <= 10;"
                 "INSERT INTO customers VALUES (5000, 'new');")

    proc, opened = _audited(["restore", str(path), "--yes", "--local"], url, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [name for name, _ in opened] == [str(path)] * 3, opened
    checksum, head, rows = (read for _, read in opened)
    size = path.stat().st_size
    assert checksum == size and rows == size, (opened, size)  # the hash pass and the restore's one pass
    assert head <= HEAD_READ < size // 4, (head, size)  # the metadata: a bounded read of the head, not a pass
    assert "orders: 599700 → 600000" in proc.stdout, proc.stdout  # the counts preface, without the detailed diff
    assert "[insert" not in proc.stdout and "change " not in proc.stdout, proc.stdout
    assert_same(before, snapshot(url))


def test_without_a_manifest_the_restore_still_reads_the_file_once(make_db, tmp_path):
    """A backup of an older version has no manifest: the preface's backup counts are the rows the restore loaded
    (checked against the file's own counts as it read them), so no counting pass is added."""
    _, url = make_db()
    _shop(url)
    path = _backup(url, tmp_path)
    before = snapshot(url)
    manifest = path.with_name(path.name + ".manifest.json")
    assert manifest.exists()
    manifest.unlink()
    run_sql(url, "DELETE FROM orders WHERE id <= 300")

    proc, opened = _audited(["restore", str(path), "--yes", "--local"], url, tmp_path)
    assert proc.returncode == 0, proc.stderr
    size = path.stat().st_size
    full_passes = [read for _, read in opened if read == size]
    assert len(full_passes) == 2, (opened, size)  # the checksum and the restore
    assert "orders: 599700 → 600000" in proc.stdout, proc.stdout
    assert_same(before, snapshot(url))


def test_dry_run_reads_for_the_detailed_diff_and_changes_nothing(make_db, tmp_path):
    _, url = make_db()
    _shop(url)
    path = _backup(url, tmp_path)
    run_sql(url, "DELETE FROM orders WHERE id <= 300")
    changed = snapshot(url)

    proc, opened = _audited(["restore", str(path), "--dry-run", "--local"], url, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "insert 300" in proc.stdout, proc.stdout  # the detailed diff a person reads
    assert opened, "the dry run read nothing"
    assert_same(changed, snapshot(url))
