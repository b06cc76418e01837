"""The database's rows as the backup's own JSON lines, read by a child process for the diff.

A backup writes each row as archive/rowjson.dump_rows makes it of what pg/snapshot.py's SELECT returns. Read
again the same way (same SELECT, same session settings, same encoder), a row that has not changed since gives the
very bytes the file holds, so the diff pairs equal rows by comparing bytes with no conversion of either side;
only the rows left unpaired are turned into COPY text to be fingerprinted (core/diff.py). Measured on the
benchmark's pgbench scale-20 database, this is the backup's own reading cost (~0.5 us a row) in the child, against
~4 ns a byte for turning every JSON line of the file into COPY text in the parent.

The stream: each table's rows as lines `[...],\\n`, then one NUL byte (JSON escapes every control character, so a
raw NUL never occurs inside). The child joins the snapshot the parent exported. Run as
`python -m backup_tasks.core.json_rows` with the job on stdin and the database URL in the environment.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator, Iterator

from ..archive.document import ROW_SEPARATOR
from ..archive.rowjson import dump_rows
from ..childproc import Child, read_job, report_failure, stdout_stream
from ..errors import BackupError, DatabaseError

_URL_ENV = "BACKUP_TASKS_JSON_ROWS_URL"
END_OF_TABLE = b"\0"
# After every row, the last one of a table too, so rows compare as whole lines: the file's separator between rows,
# which the diff appends to each block the file gives it (rows of the file and of the database, byte for byte).
LINE_END = ROW_SEPARATOR
# The child's fetches are the backup's (its batch budget), two queued rather than four. Measured on the benchmark's
# diff (3 M rows): 256 KiB batches held the child at 31 MB instead of 42-47 MB, but made the diff ~0.9 s slower
# (five times the fetches of its widest table); the queue's depth changed neither much.
READ_IN_FLIGHT = 2
# The parent reads the pipe (widened to 1 MiB, childproc._widen_pipe) 128 KiB at a time. Reading 1 MiB at a time
# made the diff ~0.3 s faster but held the parent at 87-96 MB against 62-65 MB (alternating runs, 3 M rows).
PIECE_BYTES = 128 << 10


def read_json_rows(url: str, statements: list[str], small: list[bool], snapshot: str | None,
                   budget: int, relations: list[str] | None = None) -> Iterator[tuple[int, bytes | None]]:
    """Yield (statement index, JSON lines of whole rows) as the child reads, and (index, None) after each one.
    `statements` are the backup's SELECTs (pg/snapshot.select_rows), `small` which are read in one round trip,
    `relations` the tables they read (quoted names), which the child locks as it joins the snapshot."""
    job = {"statements": statements, "small": small, "snapshot": snapshot, "budget": budget,
           "relations": relations or []}
    child = Child("backup_tasks.core.json_rows", job, {_URL_ENV: url})
    try:
        complete = yield from frames(child.chunks(PIECE_BYTES), len(statements))
        child.finish(DatabaseError("reading rows failed: the row reader stopped"))
        if not complete:
            raise DatabaseError("reading rows failed: the row reader's output ended inside a table")
    finally:
        child.close()


def frames(chunks: Iterator[bytes], expected: int) -> Generator[tuple[int, bytes | None], None, bool]:
    """The child's output as (table, whole lines) and (table, None) at each table's end; returns whether every
    table ended. Each byte is copied once on its way: a line cut by a read is joined from its pieces once (a line
    of several MB spans many reads)."""
    table = 0
    pieces: list[bytes] = []  # the unfinished last line, as read
    for chunk in chunks:
        start = 0
        while (end := chunk.find(END_OF_TABLE, start)) >= 0:
            if table >= expected:
                raise DatabaseError("reading rows failed: the row reader wrote more tables than it was given")
            text = _joined(pieces, chunk[start:end])
            if text:
                yield table, text
            yield table, None
            table += 1
            start = end + 1
        cut = chunk.rfind(b"\n", start) + 1
        if cut:
            yield table, _joined(pieces, chunk if start == 0 and cut == len(chunk) else chunk[start:cut])
            if cut < len(chunk):
                pieces.append(chunk[cut:])
        elif start < len(chunk):
            pieces.append(chunk[start:] if start else chunk)
    return table == expected and not pieces


def _joined(pieces: list[bytes], tail: bytes) -> bytes:
    if not pieces:
        return tail
    pieces.append(tail)
    text = b"".join(pieces)
    pieces.clear()
    return text


def main() -> int:
    from ..pg.snapshot import END, batches_in_snapshot

    job = read_job()
    url = os.environ.pop(_URL_ENV)
    try:
        with stdout_stream() as out:
            for _, batch, sizer in batches_in_snapshot(url, job["snapshot"], job["statements"], job["budget"],
                                                       job["small"], "backup_tasks_diff", READ_IN_FLIGHT,
                                                       job.get("relations")):
                if batch is END:
                    out.write(END_OF_TABLE)
                    continue
                data = dump_rows(batch) + LINE_END
                sizer.observe(len(batch), len(data))
                out.write(data)
    except BrokenPipeError:
        return 0  # the parent stopped reading: it knows why
    except BackupError as exc:
        return report_failure(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
