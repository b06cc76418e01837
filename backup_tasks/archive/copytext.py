"""Rows of a backup as PostgreSQL's COPY text, the bytes a restore sends and a diff compares.

Lines that backup_tasks wrote (a RawBlock from a file that matches its recorded checksum) are converted in bulk
without being parsed; any other rows are parsed (by the reader), written again the canonical way and converted.
NULL becomes \\N and '' an empty field, so they stay distinct (archive/rowjson.py).
"""

from __future__ import annotations

from typing import Any

from .reader import RawBlock
from .rowjson import dump_rows, is_canonical, lines_to_copy_text


def encode_rows(rows: Any, ncolumns: int) -> bytes:
    """A batch of rows as COPY input. Values are checked by PostgreSQL's own input function for each column;
    a number or boolean given for a text column is stored as its JSON text (documented in the README)."""
    if not ncolumns:
        return b"\n" * len(rows)  # zero-column table: one empty line per row
    if isinstance(rows, RawBlock):  # lines as backup_tasks wrote them (checksum verified), if their shape says so
        data = lines_to_copy_text(rows.raw, width=ncolumns)
        if data is not None:
            return data
        rows = rows.parse()  # edited after the checksum was recorded: parsed and checked like any file's rows
    return lines_to_copy_text(canonical_lines(rows))


def canonical_lines(rows: Any) -> bytes:
    """Parsed rows as the JSON lines dump_rows writes (`[..],\n[..]`): the block they were parsed from when it is
    exactly that (a RowBatch's raw), else the rows written again."""
    raw = getattr(rows, "raw", None)
    return raw if raw is not None and is_canonical(rows, raw) else dump_rows(rows)
