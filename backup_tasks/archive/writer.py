"""Streaming writers of the backup document. Memory use is one batch of rows, whatever the database size.

Layers: a sink takes the compressed bytes (a new local file; or anything with write/finish/abort, such as an S3
multipart upload); GzipStream compresses into it, counting and hashing what it writes; ArchiveWriter writes the
whole document (archive/document.py) through one GzipStream.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from isal import igzip_threaded

from . import document


class Sink(Protocol):
    """Where compressed bytes go. finish() makes them durable (fsync, or completing an upload); abort() gives up
    (the caller removes what was written)."""

    def write(self, data: bytes) -> int: ...

    def finish(self) -> None: ...

    def abort(self) -> None: ...


class FileSink:
    """A new file (it must not exist): bytes are never written over another file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = open(self.path, "xb")

    def write(self, data) -> int:
        return self._file.write(data)

    def finish(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def abort(self) -> None:
        try:
            self._file.close()
        except OSError:
            # Closing flushes the buffered tail, which fails again on a full disk (EFBIG/ENOSPC): raised from the
            # caller's error handler it replaced the "no space left" StorageError with a traceback.
            pass


class _Counting(io.RawIOBase):
    """Raw sink that hashes and counts the compressed bytes on their way out."""

    def __init__(self, sink: Sink):
        self._sink = sink
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # must return len(input), or BufferedWriter resends data
        view = memoryview(b)
        self._sink.write(view)
        self.sha256.update(view)
        self.size += len(view)
        return len(view)


class GzipStream:
    """Bytes compressed as one standard gzip member into `sink`; finish() returns (compressed size, sha256)."""

    def __init__(self, sink: Sink, compresslevel: int = 1, threads: int = 1):
        self.sink = sink
        self._counted = _Counting(sink)
        # The threaded writer compresses off the GIL while rows are being fetched and serialised.
        self._gz = igzip_threaded.open(self._counted, "wb", compresslevel=compresslevel, threads=threads)
        self.uncompressed_bytes = 0
        self._closed = False

    def write(self, data: bytes) -> None:
        self._gz.write(data)
        self.uncompressed_bytes += len(data)

    def finish(self) -> tuple[int, str]:
        self._gz.close()
        self.sink.finish()
        self._closed = True
        return self._counted.size, self._counted.sha256.hexdigest()

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._gz.close()
        except Exception:  # noqa: BLE001 - abandoning partial output; the caller removes it
            pass
        self.sink.abort()


class ArchiveWriter:
    """Writes the whole document to `path` (which must not exist) or to a sink. Call finish() for a complete
    backup; close() alone leaves partial output that the caller removes."""

    def __init__(self, path: Path | None = None, compresslevel: int = 1, threads: int = 1, *,
                 sink: Sink | None = None):
        self.path = path
        self._stream = GzipStream(sink or FileSink(path), compresslevel, threads)
        self._tables = 0
        self._rows_in_table = 0
        self._table_bytes_start = 0
        self._large_objects = False

    @property
    def uncompressed_bytes(self) -> int:
        return self._stream.uncompressed_bytes

    def _write(self, data: bytes) -> None:
        self._stream.write(data)

    def begin(self, metadata: dict[str, Any]) -> None:
        self._write(document.head(metadata))

    def begin_table(self, key: str, header: dict[str, Any]) -> None:
        """Start a table object; `header` holds every field except data and row_count (columns first)."""
        self._write(document.table_open(key, header, first=not self._tables))
        self._tables += 1
        self._rows_in_table = 0
        self._table_bytes_start = self.uncompressed_bytes

    def write_rows(self, rows: Sequence[Any]) -> int:
        if not rows:
            return 0
        for piece in document.row_pieces(rows, after_rows=bool(self._rows_in_table)):
            self._write(piece)
        self._rows_in_table += len(rows)
        return len(rows)

    def end_table(self) -> tuple[int, int]:
        """Close the table object (or the large objects' section); returns its (rows, uncompressed bytes)."""
        self._write(document.table_close(self._rows_in_table))
        return self._rows_in_table, self.uncompressed_bytes - self._table_bytes_start

    def begin_large_objects(self, header: dict[str, Any]) -> None:
        """The `large_objects` section after the tables (document.large_objects_open)."""
        self._write(document.large_objects_open(header, after_tables=bool(self._tables)))
        self._large_objects = True
        self._rows_in_table = 0
        self._table_bytes_start = self.uncompressed_bytes

    def finish(self) -> tuple[int, str]:
        """Close the document, flush it out (fsync); returns (compressed size, sha256 hex)."""
        self._write(document.tail(self._large_objects))
        return self._stream.finish()

    def close(self) -> None:
        self._stream.abort()
