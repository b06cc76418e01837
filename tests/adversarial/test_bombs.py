"""Decompression bombs: ~2 MB gzip files that expand to 2 GB or more, restored by `backupctl` in a process whose
address space is capped at 1 GB (RLIMIT_AS). Each must be refused with a clean `Error:` (or, where the extra
bytes are harmless whitespace, streamed through and restored exactly), never exhaust memory, never leave a
traceback, and never change the database.

Found and fixed here (archive/reader.py, archive/_generic.py): an endless row line was buffered by re-joining the
whole buffer for every 1 MB read (quadratic: 4+ minutes) and died with a MemoryError traceback; an endless line
after a few complete rows let the buffer grow without bound; the generic parser's yajl re-scanned an endless
string token on every read (quadratic) with no bound; one row of millions of values was built in memory
before its width was checked, in both readers.
"""

from __future__ import annotations

import re
import resource
import time
from pathlib import Path

import pytest

from tests.oracle import assert_same, snapshot

from .support import assert_clean_error, assert_ok, cli, run_sql, write_bomb

pytestmark = pytest.mark.adversarial

GB = 1 << 30
BOMB = 2 * GB
ADDRESS_SPACE = 1 * GB


def limited_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def head_and_logs(text: str) -> tuple[bytes, bytes]:
    """The metadata line, and the `logs` table's header line (both in the tool's line layout)."""
    lines = text.split("\n")
    logs = next(line for line in lines if line.startswith('"logs":'))
    return (lines[0] + "\n").encode(), (logs + "\n").encode()


def restore(path: Path, url: str, *extra: str):
    started = time.monotonic()
    proc = cli("restore", str(path), "--local", "--yes", "--database-url", url, *extra,
               preexec_fn=limited_memory, timeout=180)
    return proc, time.monotonic() - started


# name -> (builder(dir, text) -> path, what the error must say)
def _row_of_spaces(d: Path, text: str) -> Path:
    head, logs = head_and_logs(text)
    write_bomb(d / "spaces.backup.gz", head + logs + b'[1,"', b" ", BOMB)
    return d / "spaces.backup.gz"


def _row_of_digits(d: Path, text: str) -> Path:
    head, logs = head_and_logs(text)
    write_bomb(d / "digits.backup.gz", head + logs + b"[", b"9", BOMB)
    return d / "digits.backup.gz"


def _endless_newlines(d: Path, text: str) -> Path:
    head, logs = head_and_logs(text)
    write_bomb(d / "newlines.backup.gz", head + logs, b"\n", BOMB)
    return d / "newlines.backup.gz"


def _rows_then_endless_line(d: Path, text: str) -> Path:
    head, logs = head_and_logs(text)
    write_bomb(d / "rows-then-line.backup.gz", head + logs + b'[1,"a",1],\n[2,"b",2],\n[3,"', b"x", BOMB)
    return d / "rows-then-line.backup.gz"


def _row_of_many_values(d: Path, text: str) -> Path:
    # 300 MB, under BACKUP_MAX_LINE_BYTES: one complete, well-formed line of 150 million values.
    head, logs = head_and_logs(text)
    write_bomb(d / "many-values.backup.gz", head + logs + b"[1", b",1", 300 << 20, b']\n],"row_count":1}\n}}\n')
    return d / "many-values.backup.gz"


def _generic_endless_whitespace(d: Path, text: str) -> Path:
    write_bomb(d / "generic-whitespace.backup.gz", b'{"metadata":', b" \n", BOMB)
    return d / "generic-whitespace.backup.gz"


def _generic_endless_string(d: Path, text: str) -> Path:
    write_bomb(d / "generic-string.backup.gz", b'{"tables":{"logs":{"columns":["', b"a", BOMB)
    return d / "generic-string.backup.gz"


def _generic_row_of_many_values(d: Path, text: str) -> Path:
    write_bomb(d / "generic-values.backup.gz", b'{"tables":{"logs":{"columns":["id","msg","level"],"data":[[1',
               b",1", BOMB)
    return d / "generic-values.backup.gz"


BOMBS = {
    "row-of-spaces": (_row_of_spaces, "longer than"),
    "row-of-digits": (_row_of_digits, "longer than"),
    # `restore --yes` reads the file once (its counts preface is taken from the rows it loads, with or without a
    # manifest): the restore's reader skips the newlines as JSON whitespace, in bounded memory, to the end of the file.
    "endless-newlines": (_endless_newlines, "ends inside a table's rows"),
    "rows-then-endless-line": (_rows_then_endless_line, "longer than"),
    "row-of-many-values": (_row_of_many_values, "more values than"),
    "generic-endless-whitespace": (_generic_endless_whitespace, "longer than"),
    "generic-endless-string": (_generic_endless_string, "longer than"),
    "generic-row-of-many-values": (_generic_row_of_many_values, "more than 3 values"),
}


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_bomb_is_refused_in_bounded_memory(bomb, seeded, tmp_path):
    build, says = BOMBS[bomb]
    path = build(tmp_path, seeded.text)
    assert path.stat().st_size < 4 << 20  # a few MB on disk

    proc, elapsed = restore(path, seeded.url)

    line = assert_clean_error(proc, 4)
    assert says in line and "memory" not in line, line
    assert elapsed < 60, f"{bomb}: {elapsed:.1f} s"
    assert_same(seeded.before, snapshot(seeded.url))


def test_verify_and_dry_run_refuse_a_bomb_too(seeded, tmp_path):
    path = _row_of_spaces(tmp_path, seeded.text)
    for args in (["verify", str(path), "--local"],
                 ["restore", str(path), "--local", "--dry-run", "--database-url", seeded.url],
                 ["diff", str(path), "--local", "--database-url", seeded.url]):
        proc = cli(*args, preexec_fn=limited_memory, timeout=180)
        assert "longer than" in assert_clean_error(proc, 4)
    assert_same(seeded.before, snapshot(seeded.url))


def test_gigabytes_of_whitespace_after_the_document_are_streamed_and_the_restore_is_exact(seeded, tmp_path):
    """Valid JSON (whitespace may follow the document): restored exactly, in bounded memory."""
    path = tmp_path / "trailing.backup.gz"
    write_bomb(path, seeded.text.encode(), b" \n", BOMB)
    run_sql(seeded.url, "DELETE FROM tags; UPDATE items SET qty = 0; INSERT INTO y VALUES ('extra')")
    assert snapshot(seeded.url) != seeded.before

    proc, _ = restore(path, seeded.url)

    assert_ok(proc)
    assert re.search(r"Restore completed: 4 tables, 21 rows", proc.stdout), proc.stdout
    assert_same(seeded.before, snapshot(seeded.url))
