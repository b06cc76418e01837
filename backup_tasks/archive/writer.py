"""Streaming writer of the backup document. Memory use is one batch of rows, whatever the database size."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any, Sequence

import orjson
from isal import igzip_threaded

from .rowjson import dump_rows


class _CountingFile(io.RawIOBase):
    """Raw sink that hashes and counts the compressed bytes on their way to disk."""

    def __init__(self, raw: io.BufferedWriter):
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # must return len(input), or BufferedWriter resends data
        view = memoryview(b)
        self._raw.write(view)
        self.sha256.update(view)
        self.size += len(view)
        return len(view)


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


class ArchiveWriter:
    """Writes the document to `path` (which must not exist). Call finish() for a complete file; close() alone
    leaves a partial file that the caller deletes."""

    def __init__(self, path: Path, compresslevel: int = 1, threads: int = 1):
        self.path = path
        self._raw = open(path, "xb")
        self._sink = _CountingFile(self._raw)
        # Standard gzip output; the threaded writer compresses off the GIL while rows are being fetched.
        self._gz = igzip_threaded.open(self._sink, "wb", compresslevel=compresslevel, threads=threads)
        self.uncompressed_bytes = 0
        self._tables = 0
        self._rows_in_table = 0
        self._table_bytes_start = 0
        self._large_objects = False
        self._closed = False

    def _write(self, data: bytes) -> None:
        self._gz.write(data)
        self.uncompressed_bytes += len(data)

    def begin(self, metadata: dict[str, Any]) -> None:
        self._write(b'{"metadata":' + _dumps(metadata) + b',"tables":{\n')

    def begin_table(self, key: str, header: dict[str, Any]) -> None:
        """Start a table object; `header` holds every field except data and row_count (columns first)."""
        head = _dumps(header)
        assert head.endswith(b"}")
        prefix = b",\n" if self._tables else b""
        self._write(prefix + _dumps(key) + b":" + head[:-1] + (b"," if len(head) > 2 else b"") + b'"data":[\n')
        self._tables += 1
        self._rows_in_table = 0
        self._table_bytes_start = self.uncompressed_bytes

    def write_rows(self, rows: Sequence[Any]) -> int:
        if not rows:
            return 0
        lines = dump_rows(rows)  # one JSON row per line
        count = len(rows)
        self._write((b",\n" if self._rows_in_table else b"") + lines)
        self._rows_in_table += count
        return count

    def end_table(self) -> tuple[int, int]:
        """Close the table object (or the large objects' section); returns its (rows, uncompressed bytes)."""
        close = b"\n]," if self._rows_in_table else b"],"  # the header line already ended with a newline
        self._write(close + b'"row_count":' + str(self._rows_in_table).encode() + b"}")
        return self._rows_in_table, self.uncompressed_bytes - self._table_bytes_start

    def begin_large_objects(self, header: dict[str, Any]) -> None:
        """Close `tables` and open the `large_objects` section: an object like a table's (`columns`, `data`,
        `row_count`), whose rows are chunks of large objects. Only written when the database has any, so a
        backup without large objects is the document it always was."""
        head = _dumps(header)
        self._write((b"\n" if self._tables else b"") + b'},"large_objects":' + head[:-1] + b',"data":[\n')
        self._large_objects = True
        self._rows_in_table = 0
        self._table_bytes_start = self.uncompressed_bytes

    def finish(self) -> tuple[int, str]:
        """Close the document, flush to disk; returns (compressed size, sha256 hex)."""
        self._write(b"\n}\n" if self._large_objects else b"\n}}\n")
        self._gz.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        self._closed = True
        return self._sink.size, self._sink.sha256.hexdigest()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._gz.close()
        except Exception:  # noqa: BLE001 - abandoning a partial file; the caller deletes it
            pass
        try:
            self._raw.close()
        except OSError:
            # Closing flushes the buffered tail, which fails again on a full disk (EFBIG/ENOSPC): raised from
            # the caller's error handler it replaced the "no space left" StorageError with a traceback.
            pass
