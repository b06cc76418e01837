"""Tables as COPY text, read by a child process.

psycopg2's copy_expert calls back into Python for every row it receives and releases the GIL around each libpq
call. Next to a busy thread (the diff's file side) every row then waited for the GIL: 2 M rows took 150 s instead
of 1.1 s (measured on this machine). A child process has a single thread, so nothing waits: it writes each table's
COPY text through a C-buffered writer into a pipe, and the parent reads the pipe a MiB at a time.

The stream: each table's COPY text, then one NUL byte (PostgreSQL text never holds NUL, so it cannot occur inside).
The child reads in the snapshot the parent exported, so it sees exactly what the parent counted. A failure is one
JSON line on stderr and a non-zero exit, raised in the parent as a DatabaseError.

Run as `python -m backup_tasks.pg.copy_out` with the job (statements, snapshot) as JSON on stdin and the database
URL in the environment (not on the command line, where `ps` shows it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Generator, Iterator
from pathlib import Path

from psycopg2 import sql

from ..errors import BackupError, DatabaseError
from .catalog import Table
from .snapshot import select_rows

READ_BYTES = 1 << 20
_URL_ENV = "BACKUP_TASKS_COPY_OUT_URL"
_END = b"\0"
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the child imports this same copy of backup_tasks


def copy_out_select(table: Table, columns: list[str]) -> sql.Composable:
    """COPY TO of the backup's SELECT: every value written as the backup's JSON holds it (archive/rowjson.py
    turns those JSON lines into the same COPY text, byte for byte)."""
    return sql.SQL("COPY ({}) TO STDOUT").format(select_rows(table, columns, bool_as_text=True))


def read_tables(url: str, statements: list[str], snapshot: str | None) -> Iterator[tuple[int, bytes | None]]:
    """Yield (statement index, COPY text of whole lines) as the child reads, and (index, None) after each one."""
    env = {**os.environ, _URL_ENV: url,
           "PYTHONPATH": os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "backup_tasks.pg.copy_out"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    printed = _Drain(proc.stderr)  # read as it comes: a child blocked on a full stderr pipe would never finish
    try:
        try:
            proc.stdin.write(json.dumps({"statements": statements, "snapshot": snapshot}).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the child is gone already: its exit code and message say why
        complete = yield from _frames(proc.stdout.fileno(), len(statements))
        if proc.wait() != 0:  # its own message first: a failed child also leaves its output incomplete
            raise _child_error(printed.text(), proc.returncode)
        if not complete:
            raise DatabaseError("reading rows failed: the COPY reader's output ended inside a table")
    finally:
        if proc.poll() is None:  # stopped early (an error on the other side, Ctrl-C): the child goes too
            proc.kill()
            proc.wait()
        proc.stdout.close()
        printed.thread.join()


class _Drain:
    """The child's stderr, read in a thread; the last 64 KiB are kept."""

    def __init__(self, stream):
        self._stream = stream
        self._data = bytearray()
        self.thread = threading.Thread(target=self._run, name="copy-out-stderr", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self._stream:
            while chunk := self._stream.read1(65536):
                self._data += chunk
                del self._data[:-65536]

    def text(self) -> bytes:
        self.thread.join()
        return bytes(self._data)


def _frames(fd: int, expected: int) -> Generator[tuple[int, bytes | None], None, bool]:
    """The child's output as (table, whole lines) and (table, None) at each table's end; returns whether every
    table ended."""
    table = 0
    partial = bytearray()  # the unfinished last line of the previous read
    while True:
        chunk = os.read(fd, READ_BYTES)
        if not chunk:
            break
        start = 0
        while (end := chunk.find(_END, start)) >= 0:
            if table >= expected:
                raise DatabaseError("reading rows failed: the COPY reader wrote more tables than it was given")
            partial += chunk[start:end]
            if partial:
                yield table, bytes(partial)
            partial.clear()
            yield table, None
            table += 1
            start = end + 1
        cut = chunk.rfind(b"\n", start)
        if cut >= 0:
            partial += chunk[start:cut + 1]
            yield table, bytes(partial)
            partial.clear()
            partial += chunk[cut + 1:]
        else:
            partial += chunk[start:]
    return table == expected and not partial


def _child_error(printed: bytes, code: int) -> DatabaseError:
    for line in reversed(printed.decode("utf-8", "replace").splitlines()):
        try:
            failure = json.loads(line)
        except ValueError:
            continue
        if isinstance(failure, dict) and "message" in failure:
            return DatabaseError(failure["message"], hint=failure.get("hint"))
    last = (printed.decode("utf-8", "replace").strip().splitlines() or [f"exit code {code}"])[-1]
    return DatabaseError(f"reading rows failed: the COPY reader stopped ({last})")


def main() -> int:
    import psycopg2
    import psycopg2.extensions

    from .connection import connect, pg_error_message, privilege_hint

    job = json.load(sys.stdin)
    url = os.environ.pop(_URL_ENV)
    try:
        with open(sys.stdout.fileno(), "wb", buffering=READ_BYTES, closefd=False) as out:
            conn = connect(url, application="backup_tasks_diff")
            conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
            cur = conn.cursor()
            if job["snapshot"]:
                cur.execute("SET TRANSACTION SNAPSHOT %s", (job["snapshot"],))
            for statement in job["statements"]:
                cur.copy_expert(statement, out)
                out.write(_END)
    except BrokenPipeError:
        return 0  # the parent stopped reading: it knows why
    except psycopg2.Error as exc:
        _fail(f"reading rows failed: {pg_error_message(exc)}", privilege_hint(exc))
        return 1
    except BackupError as exc:
        _fail(exc.message, exc.hint)
        return 1
    return 0


def _fail(message: str, hint: str | None) -> None:
    sys.stderr.write(json.dumps({"message": message, "hint": hint}) + "\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
