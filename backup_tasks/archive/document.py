"""The bytes of the backup document, piece by piece (archive/__init__.py shows the layout).

One owner for every separator and bracket, so that a backup written by one process (ArchiveWriter) and one
assembled from parts written by several (core/parallel.py) are the same document byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from .rowjson import dump_rows

TABLE_SEPARATOR = b",\n"
ROW_SEPARATOR = b",\n"


def head(metadata: dict[str, Any]) -> bytes:
    return b'{"metadata":' + orjson.dumps(metadata) + b',"tables":{\n'


def table_open(key: str, header: dict[str, Any], first: bool) -> bytes:
    """A table object up to its rows; `header` holds every field except data and row_count (columns first)."""
    fields = orjson.dumps(header)
    assert fields.endswith(b"}")
    return ((b"" if first else TABLE_SEPARATOR) + orjson.dumps(key) + b":" + fields[:-1]
            + (b"," if len(fields) > 2 else b"") + b'"data":[\n')


def rows(batch: Sequence[Any], after_rows: bool) -> bytes:
    """A batch of rows, one per line; after_rows: other rows of the same table come before it."""
    return b"".join(row_pieces(batch, after_rows))


def row_pieces(batch: Sequence[Any], after_rows: bool) -> tuple[bytes, ...]:
    """rows() as pieces to write one after the other: a batch of one multi-MB row is not copied once more to put
    the separator before it."""
    body = dump_rows(batch)
    return (ROW_SEPARATOR, body) if after_rows else (body,)


def table_close(count: int) -> bytes:
    """The end of a table object (or of the large objects' section): its row_count."""
    return (b"\n]," if count else b"],") + b'"row_count":' + str(count).encode() + b"}"  # `[` ended its line


def large_objects_open(header: dict[str, Any], after_tables: bool) -> bytes:
    """Close `tables` and open the `large_objects` section: an object like a table's (`columns`, `data`,
    `row_count`), whose rows are chunks of large objects. Only written when the database has any, so a backup
    without large objects is the document it always was."""
    fields = orjson.dumps(header)
    return (b"\n" if after_tables else b"") + b'},"large_objects":' + fields[:-1] + b',"data":[\n'


def tail(large_objects: bool) -> bytes:
    return b"\n}\n" if large_objects else b"\n}}\n"
