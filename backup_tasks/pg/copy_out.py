"""Tables as COPY text, read by a child process.

psycopg2's copy_expert calls back into Python for every row it receives and releases the GIL around each libpq
call, so next to busy threads it crawls (backup_tasks/childproc.py): a child process writes each table's COPY text
through a C-buffered writer into a pipe.

The stream: each table's COPY text, then one NUL byte (PostgreSQL text never holds NUL, so it cannot occur inside).
The child reads in the snapshot the parent exported, so it sees exactly what the parent counted. A failure is one
JSON line on stderr and a non-zero exit, raised in the parent as a DatabaseError.

Run as `python -m backup_tasks.pg.copy_out` with the job (statements, snapshot) as JSON on stdin and the database
URL in the environment (not on the command line, where `ps` shows it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator, Iterator

from psycopg2 import sql

from ..childproc import Child, read_job, report_failure, stdout_stream
from ..errors import BackupError, DatabaseError
from .catalog import Table
from .snapshot import select_rows

_URL_ENV = "BACKUP_TASKS_COPY_OUT_URL"
_END = b"\0"


def copy_out_select(table: Table, columns: list[str]) -> sql.Composable:
    """COPY TO of the backup's SELECT: every value written as the backup's JSON holds it (archive/rowjson.py
    turns those JSON lines into the same COPY text, byte for byte)."""
    return sql.SQL("COPY ({}) TO STDOUT").format(select_rows(table, columns, bool_as_text=True))


def read_tables(url: str, statements: list[str], snapshot: str | None) -> Iterator[tuple[int, bytes | None]]:
    """Yield (statement index, COPY text of whole lines) as the child reads, and (index, None) after each one."""
    child = Child("backup_tasks.pg.copy_out", {"statements": statements, "snapshot": snapshot}, {_URL_ENV: url})
    try:
        complete = yield from _frames(child.chunks(), len(statements))
        child.finish(DatabaseError("reading rows failed: the COPY reader stopped"))
        if not complete:
            raise DatabaseError("reading rows failed: the COPY reader's output ended inside a table")
    finally:
        child.close()


def _frames(chunks: Iterator[bytes], expected: int) -> Generator[tuple[int, bytes | None], None, bool]:
    """The child's output as (table, whole lines) and (table, None) at each table's end; returns whether every
    table ended."""
    table = 0
    partial = bytearray()  # the unfinished last line of the previous read
    for chunk in chunks:
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


def main() -> int:
    import psycopg2
    import psycopg2.extensions

    from .connection import connect, pg_error_message, privilege_hint

    job = read_job()
    url = os.environ.pop(_URL_ENV)
    try:
        with stdout_stream() as out:
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
        return report_failure(DatabaseError(f"reading rows failed: {pg_error_message(exc)}", privilege_hint(exc)))
    except BackupError as exc:
        return report_failure(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
