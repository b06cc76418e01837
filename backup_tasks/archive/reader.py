"""Streaming reader of the backup document, in bounded memory.

Files in this tool's own layout (archive/__init__.py) are read line-group by line-group and parsed with orjson;
any other valid JSON document of the same shape (a file written by another implementation of the seed, or
re-formatted by hand) is read by ijson's event parser. Both check everything a restore relies on: the
document's shape, each row's width and value types, each table's row_count, and duplicate table keys.
"""

from __future__ import annotations

import itertools
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from isal import igzip
from pydantic import ValidationError

from ..errors import InvalidBackupError, NotFoundError
from ..models import FORMAT_VERSION, BackupMetadata
from ..tablekey import parse_table_key, table_key
from .encryption import NO_KEYS, Keys, open_decrypted

READ_SIZE = 512 << 10
# Rows in groups of lines of at least this size: fast, and bounded (see memory.py). Below READ_SIZE, so one chunk
# read usually completes a block: with equal sizes every block needed a second chunk, and the search for the
# table's end scanned the first one again.
BATCH_BYTES = 384 << 10
# The layout is detected from the first line, read up to this many bytes. A longer first line (a huge metadata
# table of contents, or a whole single-line document) is read by the generic parser instead, which is always
# correct: the line layout is valid JSON. Bounds the memory spent on detection.
DETECT_BYTES = 64 << 20
ALLOWED_VALUE_TYPES = frozenset({str, int, float, bool, type(None)})
_HEAD = b'{"metadata":'
_HEAD_END = b',"tables":{'
_DATA_OPEN = b'"data":['
_LARGE_OBJECTS_OPEN = b'},"large_objects":{'


@dataclass
class TableHeader:
    key: str
    schema: str
    name: str
    columns: list[str]
    column_types: list[str] | None
    row_count: int | None = None  # known after the rows were read (or before, in a seed-ordered file)
    kind: str = "table"  # or LARGE_OBJECTS: the section of large objects' chunk rows, after the tables


LARGE_OBJECTS = "large_objects"
LARGE_OBJECT_COLUMNS = ["oid", "owner", "offset", "data"]


def large_objects_header(obj: Any, name: str) -> TableHeader:
    """The `large_objects` section's header: an object like a table's, whose rows are [oid, owner, offset, data]."""
    if not isinstance(obj, dict) or obj.get("columns") != LARGE_OBJECT_COLUMNS:
        raise _bad(f"{name}: its `large_objects` section does not have the columns {LARGE_OBJECT_COLUMNS}")
    return TableHeader(LARGE_OBJECTS, "", "", list(LARGE_OBJECT_COLUMNS), None, kind=LARGE_OBJECTS)


@dataclass
class Contents:
    metadata: BackupMetadata
    tables: list[TableHeader] = field(default_factory=list)
    uncompressed_bytes: int = 0

    large_object_chunks: int | None = None  # rows of the large objects' section, when it was read

    @property
    def total_rows(self) -> int:
        return sum(t.row_count or 0 for t in self.tables)

    @property
    def large_objects(self) -> int:
        """How many large objects the backup holds (its metadata says, before any row is read)."""
        return self.metadata.large_objects.count if self.metadata.large_objects else 0


def _bad(message: str, hint: str | None = None) -> InvalidBackupError:
    return InvalidBackupError(message, hint)


class _Source:
    """Decompressed bytes of the file, with gzip and I/O errors turned into InvalidBackupError. An age-encrypted
    file (told by its first bytes, not its name) is decrypted on the way, in the same pass."""

    def __init__(self, path: Path, keys: Keys = NO_KEYS):
        try:
            self._raw = open(path, "rb")
        except FileNotFoundError:
            raise NotFoundError(f"backup file not found: {path}",
                                hint="Give a path, or a name from `backupctl list`.") from None
        except IsADirectoryError:
            raise NotFoundError(f"not a file: {path}") from None
        self.compressed_size = os.fstat(self._raw.fileno()).st_size
        if self.compressed_size == 0:
            self._raw.close()
            raise _bad(f"{path.name} is empty")
        try:
            self._plain = open_decrypted(self._raw, keys, path.name)
        except BaseException:
            self._raw.close()
            raise
        self._gz = igzip.IGzipFile(fileobj=self._plain, mode="rb")
        self.name = path.name
        self.uncompressed = 0

    @property
    def compressed_done(self) -> int:
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def read(self, n: int = READ_SIZE) -> bytes:
        try:
            data = self._gz.read(n)
        except EOFError:
            raise _bad(f"{self.name} is truncated (the gzip stream ends early)") from None
        except (OSError, zlib.error, ValueError) as exc:  # BadGzipFile is an OSError; isal raises its own
            raise _bad(f"{self.name} is not a readable gzip file: {exc}") from None
        except Exception as exc:  # isal.isal_zlib.error does not subclass zlib.error
            if type(exc).__name__ in ("error", "IsalError"):
                raise _bad(f"{self.name} is not a readable gzip file: {exc}") from None
            raise
        self.uncompressed += len(data)
        return data

    def close(self) -> None:
        try:
            self._gz.close()
        finally:
            if self._plain is not self._raw:
                self._plain.close()
            self._raw.close()


class _Lines:
    """Complete lines over the decompressed stream, never more than max_line bytes buffered per line."""

    def __init__(self, source: _Source, max_line: int):
        self.src = source
        self.max_line = max_line
        self.buf = b""
        self.pos = 0
        self.eof = False

    def fill(self, limit: int | None = None) -> bool:
        """Add input to the buffer; False at end of input.

        Adds chunks until one holds a newline, or more than `limit` (default max_line) bytes without one were
        added. Chunks without a newline grow one bytearray in place: re-joining the whole buffer for every chunk
        cost quadratic time and twice the memory on a hostile line of gigabytes (a decompression bomb), which
        then died with a MemoryError instead of the "longer than max_line" refusal.
        """
        if self.eof:
            return False
        chunk = self.src.read(READ_SIZE)
        if not chunk:
            self.eof = True
            return False
        if b"\n" in chunk:
            self.buf = b"".join((memoryview(self.buf)[self.pos:], chunk))  # bytes again after a bytearray
            self.pos = 0
            return True
        limit = self.max_line if limit is None else limit
        grow = bytearray(memoryview(self.buf)[self.pos:])
        self.buf, self.pos = b"", 0
        added = len(chunk)
        grow += chunk
        while added <= limit:
            chunk = self.src.read(READ_SIZE)
            if not chunk:
                self.eof = True
                break
            grow += chunk
            added += len(chunk)
            if b"\n" in chunk:
                break
        self.buf = grow  # not copied to bytes: that doubled the memory of a huge line (bytearray slices parse alike)
        return True

    def peek(self) -> int | None:
        while self.pos >= len(self.buf):
            if not self.fill(READ_SIZE):
                return None
        return self.buf[self.pos]

    def readline(self, limit: int | None = None) -> bytes | None:
        """The next line without its newline; None at end of input. A final line without newline is returned.

        With `limit`, a line longer than that is no error: None is returned and nothing is consumed."""
        bound = self.max_line if limit is None else limit
        while True:
            idx = self.buf.find(b"\n", self.pos)
            if idx >= 0:
                if limit is not None and idx - self.pos > limit:
                    return None
                line = self.buf[self.pos:idx]
                self.pos = idx + 1
                return line
            if len(self.buf) - self.pos > bound:
                if limit is not None:
                    return None
                raise _bad(f"a line of {self.src.name} is longer than {self.max_line} bytes",
                           hint="Raise BACKUP_MAX_LINE_BYTES if the backup really holds such a row.")
            if not self.fill(bound):
                if self.pos < len(self.buf):
                    line = self.buf[self.pos:]
                    self.pos = len(self.buf)
                    return line
                return None

    def _take(self, end: int, width: int | None, table: str) -> tuple[bytes, bool]:
        """buf[pos:end] (whole row lines), consumed, without its last newline and the comma before it (in one
        copy), and whether there was that comma. A block holding a huge line is first checked in place for more
        values than `width` columns allow: parsed, its Python objects can take ~10x its text, so one hostile row
        of millions of values exhausted memory before its width was checked."""
        if width is not None and end - self.pos > BIG_BLOCK_BYTES:
            rows = self.buf.count(b"\n", self.pos, end)  # each row line: width - 1 commas, and one after it
            if _commas_exceed(self.buf, rows * width, self.pos, end):
                raise _bad(f"{self.src.name}: {table}: a row has more values than its {width} columns, "
                           "or nested values")
        stop = end - 1  # the newline
        comma = stop > self.pos and self.buf[stop - 1] == 0x2C
        if end <= BIG_BLOCK_BYTES:
            block = self.buf[self.pos:stop - comma]
            self.pos = end
            return block, comma
        # A block of multi-MB rows leaves the buffer, so its bytes are not held twice while it is used: the
        # bytearray that fill() grew for it becomes the block itself (no copy), else the rest is kept alone.
        if isinstance(self.buf, bytearray) and self.pos == 0:
            block, self.buf = self.buf, self.buf[end:]
            del block[stop - comma:]
        else:
            block, self.buf = self.buf[self.pos:stop - comma], self.buf[end:]
        self.pos = 0
        return block, comma

    def row_block(self, width: int | None = None, table: str = "a table") -> tuple[bytes, bool, bool]:
        """(complete row lines, a comma followed them, trailer_next). Stops before the line that starts with `]`."""
        while True:
            nxt = self.peek()
            if nxt is None:
                raise _bad(f"{self.src.name} ends inside a table's rows (truncated)")
            if nxt == 0x5D:  # "]": the table's closing line
                return b"", False, True
            idx = self.buf.find(b"\n]", self.pos)
            if idx >= 0:
                return *self._take(idx + 1, width, table), True
            last = self.buf.rfind(b"\n", self.pos)
            if last >= 0 and last + 1 - self.pos >= BATCH_BYTES:
                return *self._take(last + 1, width, table), False
            # The unfinished line after the last newline: complete rows before it do not excuse it (they let the
            # buffer grow without bound when an endless line followed a few short rows).
            if len(self.buf) - (last + 1 if last >= 0 else self.pos) > self.max_line:
                raise _bad(f"a row of {self.src.name} is longer than {self.max_line} bytes",
                           hint="Raise BACKUP_MAX_LINE_BYTES if the backup really holds such a row.")
            if not self.fill():
                if last >= 0:
                    return *self._take(last + 1, width, table), False
                raise _bad(f"{self.src.name} ends inside a table's rows (truncated)")


BIG_BLOCK_BYTES = 8 * BATCH_BYTES


def _commas_exceed(buf: bytes, limit: int, start: int, end: int) -> bool:
    """Whether buf[start:end] (JSON rows) holds more than `limit` commas (or strings) outside strings.

    Plain byte searches, no regex (a regex over a long string of escapes took seconds and gigabytes). Stops as
    soon as it knows, so a row of millions of short strings costs no more than a valid row."""
    if buf.count(b",", start, end) <= limit:
        return False
    if buf.find(b"\\", start, end) >= 0:
        # Without escaped backslashes and escaped quotes, every quote left opens or closes a string.
        buf = buf[start:end].replace(b"\\\\", b"").replace(b'\\"', b"")
        start, end = 0, len(buf)
    commas = strings = 0
    pos = start
    while True:
        opening = buf.find(b'"', pos, end)
        if opening < 0:
            return commas + buf.count(b",", pos, end) > limit
        commas += buf.count(b",", pos, opening)
        strings += 1
        if commas > limit or strings > limit:
            return True
        closing = buf.find(b'"', opening + 1, end)
        if closing < 0:
            return False  # an unfinished string: the JSON parser refuses the block
        pos = closing + 1


def _check_rows(rows: Any, header: TableHeader, done: int) -> None:
    """Every row is a list of len(columns) JSON scalars: checked in C-speed passes over the batch."""
    if type(rows) is not list:
        raise _bad(f"table {header.key!r}: `data` must be an array of rows")
    if not rows:
        return
    if set(map(type, rows)) != {list}:
        raise _bad(f"table {header.key!r}: a row near row {done + 1} is not an array")
    width = len(header.columns)
    widths = set(map(len, rows))
    if widths != {width}:
        bad = next(i for i, r in enumerate(rows) if len(r) != width)
        raise _bad(f"table {header.key!r}: row {done + bad + 1} has {len(rows[bad])} values, "
                   f"expected {width} (one per column)")
    kinds = set(map(type, itertools.chain.from_iterable(rows)))
    if not kinds <= ALLOWED_VALUE_TYPES:
        odd = sorted(k.__name__ for k in kinds - ALLOWED_VALUE_TYPES)
        raise _bad(f"table {header.key!r}: values of type {', '.join(odd)} near row {done + 1}; "
                   "values must be strings, numbers, booleans or null")


def _validate_metadata(raw: Any, name: str) -> BackupMetadata:
    if not isinstance(raw, dict):
        raise _bad(f"{name}: `metadata` must be an object")
    version = raw.get("format_version", 1)
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise _bad(f"{name} uses format version {version}; this backup_tasks reads up to {FORMAT_VERSION}",
                   hint="Upgrade backup_tasks to restore this backup.")
    try:
        return BackupMetadata.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise _bad(f"{name}: invalid metadata field {where!r}: {first['msg']}") from None


def _make_header(key: Any, obj: Any, name: str) -> TableHeader:
    if not isinstance(key, str) or not isinstance(obj, dict):
        raise _bad(f"{name}: every entry of `tables` must be an object")
    columns = obj.get("columns")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise _bad(f"{name}: table {key!r} has no valid `columns` list before its `data`")
    if len(set(columns)) != len(columns):
        raise _bad(f"{name}: table {key!r} lists a column twice")
    types = obj.get("column_types")
    if types is not None and (not isinstance(types, list) or len(types) != len(columns)
                              or not all(isinstance(t, str) for t in types)):
        raise _bad(f"{name}: table {key!r} has a `column_types` list that does not match its columns")
    schema, tname = obj.get("schema"), obj.get("name")
    if schema is None and tname is None:
        parsed = parse_table_key(key)
        if parsed is None:
            raise _bad(f"{name}: table key {key!r} is not a table name")
        schema, tname = parsed
    if not isinstance(schema, str) or not isinstance(tname, str) or table_key(schema, tname) != key:
        raise _bad(f"{name}: table {key!r} has schema/name fields that do not match its key")
    row_count = obj.get("row_count")
    if row_count is not None and (type(row_count) is not int or row_count < 0):
        raise _bad(f"{name}: table {key!r} has an invalid row_count")
    return TableHeader(key, schema, tname, list(columns), types, row_count)


class RowBatch(list):
    """A batch of rows that also carries its source lines, so a loader can reuse them when they are canonical."""

    __slots__ = ("raw",)

    def __init__(self, rows: list, raw: bytes | None):
        super().__init__(rows)
        self.raw = raw


class RawBlock:
    """parse_rows=False: a block of row lines as written (`[..],\n[..]`) and how many rows it holds."""

    __slots__ = ("count", "first_row", "header", "raw")

    def __init__(self, raw: bytes, count: int, header: TableHeader | None = None, first_row: int = 0):
        self.raw = raw
        self.count = count
        self.header = header
        self.first_row = first_row  # rows of the table before this block

    def __len__(self) -> int:
        return self.count

    def parse(self) -> RowBatch:
        """The rows, parsed and checked as any file's are. For a block that turns out not to be exactly as
        backup_tasks writes rows, although the file matched its recorded SHA-256 (a file edited by hand whose
        sidecar was then recomputed, e.g. with `sha256sum`)."""
        header = self.header
        try:
            rows = orjson.loads(b"[" + self.raw + b"]")
        except orjson.JSONDecodeError as exc:
            raise _bad(f"table {header.key!r}: invalid JSON near row {self.first_row + 1} ({exc})") from None
        _check_rows(rows, header, self.first_row)
        if len(rows) != self.count:
            raise _bad(f"table {header.key!r}: rows near row {self.first_row + 1} are not one per line")
        return RowBatch(rows, None)


class TableRows:
    """One table's header and its rows in batches. Iterate `batches()` fully before asking for the next table."""

    def __init__(self, header: TableHeader, batches: Iterator[list[list[Any]]]):
        self.header = header
        self._batches = batches

    def batches(self) -> Iterator[list[list[Any]]]:
        return self._batches


class BackupReader:
    """`with BackupReader(path) as r:` then `r.metadata` and `for table in r.tables(): ...`."""

    def __init__(self, path: Path, max_line: int = 512 << 20, parse_rows: bool = True, keys: Keys = NO_KEYS):
        self.path = Path(path)
        self.max_line = max_line
        self.keys = keys
        # parse_rows=False (own layout only): batches are RawBlocks (lines and a row count), not parsed rows;
        # the document's structure and every table's row_count are still checked.
        self.parse_rows = parse_rows
        self.src = _Source(self.path, keys)
        self.metadata: BackupMetadata | None = None
        self.finished = False
        self._seen: set[str] = set()
        self._lines: _Lines | None = None
        self._generic = None
        try:
            self._fast = self._detect()
        except BaseException:
            self.src.close()  # and with it the decrypting thread, if any
            raise

    # -- setup ---------------------------------------------------------------------------------------
    def _detect(self) -> bool:
        lines = _Lines(self.src, self.max_line)
        first = lines.peek()
        if first is None:
            raise _bad(f"{self.path.name} holds no data")
        if lines.buf.startswith(_HEAD, lines.pos):
            line = lines.readline(limit=DETECT_BYTES)
            if line is not None and line.endswith(_HEAD_END):
                try:
                    raw = orjson.loads(line[len(_HEAD):-len(_HEAD_END)])
                except orjson.JSONDecodeError:
                    raise _bad(f"{self.path.name}: the metadata is not valid JSON") from None
                self.metadata = _validate_metadata(raw, self.path.name)
                self._lines = lines
                return True
        # Not our line layout: start over with the generic event parser.
        self.src.close()
        self.src = _Source(self.path, self.keys)
        from ._generic import GenericParser

        self._generic = GenericParser(self.src, self.path.name, self._new_table_header, self.max_line)
        self.metadata = self._generic.metadata_if_first()
        if self.metadata is not None:
            self.metadata = _validate_metadata(self.metadata, self.path.name)
        return False

    def _new_table_header(self, key: Any, obj: Any) -> TableHeader:
        header = _make_header(key, obj, self.path.name)
        if header.key in self._seen:
            raise _bad(f"{self.path.name}: table {header.key!r} appears twice")
        self._seen.add(header.key)
        return header

    def __enter__(self) -> BackupReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.src.close()

    @property
    def compressed_size(self) -> int:
        return self.src.compressed_size

    @property
    def compressed_done(self) -> int:
        return self.src.compressed_done

    # -- tables --------------------------------------------------------------------------------------
    def tables(self) -> Iterator[TableRows]:
        """Each table (and the large objects' section) in file order; iterate each one's batches() fully (or
        not at all) before asking for the next."""
        yield from (self._fast_tables() if self._fast else self._generic_tables())
        self.finished = True

    def _generic_tables(self) -> Iterator[TableRows]:
        yield from self._generic.tables(_check_rows)
        meta = self._generic.metadata
        if self.metadata is None:
            if meta is None:
                raise _bad(f"{self.path.name} has no `metadata`")
            self.metadata = _validate_metadata(meta, self.path.name)

    def _fast_tables(self) -> Iterator[TableRows]:
        lines = self._lines
        more, first = True, True
        while True:
            line = lines.readline()
            if line is None:
                raise _bad(f"{self.path.name} ends before its last table (truncated)")
            if line == b"}}" or line.startswith(_LARGE_OBJECTS_OPEN):
                if more and not first:
                    raise _bad(f"{self.path.name}: a comma follows the last table")
                if line != b"}}":
                    yield from self._fast_large_objects(line)
                break
            if not more:
                raise _bad(f"{self.path.name}: tables are not separated as JSON requires")
            header = self._header_line(line)
            state = {"more": False}
            yield TableRows(header, self._fast_batches(header, state))
            if state.get("done") is not True:
                # The consumer stopped early; skip to the end of this table so the next header lines up.
                for _ in self._fast_batches(header, state):
                    pass
            more, first = state["more"], False
        self._expect_end()

    def _header_line(self, line: bytes) -> TableHeader:
        if not line.endswith(_DATA_OPEN):
            raise _bad(f"{self.path.name}: unexpected content where a table should start")
        try:
            obj = orjson.loads(b"{" + line + b"]}}")
        except orjson.JSONDecodeError:
            raise _bad(f"{self.path.name}: a table header is not valid JSON") from None
        if not isinstance(obj, dict) or len(obj) != 1:
            raise _bad(f"{self.path.name}: a table header is not valid JSON")
        (key, value), = obj.items()
        if "row_count" in value:
            raise _bad(f"{self.path.name}: table {key!r} has fields after its data")
        return self._new_table_header(key, value)

    def _expect_end(self) -> None:
        lines = self._lines
        while True:
            if lines.buf[lines.pos:].strip():
                raise _bad(f"{self.path.name} has data after the end of the document")
            # Whitespace is dropped as it is read, so gigabytes of it after the document cost no memory.
            lines.pos = len(lines.buf)
            if not lines.fill(READ_SIZE):
                break

    def _fast_large_objects(self, line: bytes) -> Iterator[TableRows]:
        """The `large_objects` section after the tables: its header line, its chunk rows, then the document's end."""
        if not line.endswith(_DATA_OPEN):
            raise _bad(f"{self.path.name}: unexpected content where the large objects start")
        try:
            obj = orjson.loads(b"{" + line[2:] + b"]}}")
        except orjson.JSONDecodeError:
            raise _bad(f"{self.path.name}: the large objects' header is not valid JSON") from None
        header = large_objects_header(obj.get(LARGE_OBJECTS) if isinstance(obj, dict) else None, self.path.name)
        state = {"more": False}
        yield TableRows(header, self._fast_batches(header, state, parse=True))
        if state.get("done") is not True:
            for _ in self._fast_batches(header, state, parse=True):
                pass
        if state["more"] or self._lines.readline() != b"}":
            raise _bad(f"{self.path.name}: the document does not end after its large objects")

    def _fast_batches(self, header: TableHeader, state: dict, parse: bool | None = None) -> Iterator[list[list[Any]]]:
        lines = self._lines
        name = self.path.name
        done = state.get("rows", 0)
        comma_pending = state.get("comma", False)
        parse = self.parse_rows if parse is None else parse
        while True:
            width = len(header.columns) if parse else None
            body, comma, trailer_next = lines.row_block(width, f"table {header.key!r}")
            if body or comma:
                if done and not comma_pending:
                    raise _bad(f"{name}: table {header.key!r}: rows near row {done + 1} are not separated by a comma")
                comma_pending = comma
                # The block is not kept in this frame while the consumer has it: with multi-MB rows, that was one
                # row more in memory while the next one was read.
                if not parse:
                    count = body.count(b"\n") + 1
                    block_start, done = done, done + count
                    state["rows"], state["comma"] = done, comma_pending
                    block, body = RawBlock(body, count, header, block_start), None
                    yield block
                    del block
                    continue
                try:
                    rows = orjson.loads(b"[" + body + b"]")
                except orjson.JSONDecodeError as exc:
                    raise _bad(f"{name}: table {header.key!r}: invalid JSON near row {done + 1} ({exc})") from None
                _check_rows(rows, header, done)
                done += len(rows)
                state["rows"], state["comma"] = done, comma_pending
                batch, rows, body = RowBatch(rows, body), None, None
                yield batch
                del batch
            if trailer_next:
                break
        if comma_pending:
            raise _bad(f"{name}: table {header.key!r}: a comma follows its last row")
        line = lines.readline()
        more = line.endswith(b",") if line else False
        body = line[:-1] if more else line
        try:
            tail = orjson.loads(b'{"data":[' + (body or b""))
        except orjson.JSONDecodeError:
            raise _bad(f"{name}: table {header.key!r}: its closing `row_count` is not valid JSON") from None
        if not isinstance(tail, dict) or set(tail) != {"data", "row_count"}:
            raise _bad(f"{name}: table {header.key!r}: unexpected fields after its data")
        count = tail["row_count"]
        if type(count) is not int or count != done:
            raise _bad(f"{name}: table {header.key!r}: row_count says {count} but the data holds {done} rows")
        header.row_count = done
        state["more"], state["done"] = more, True


def scan(path: Path, max_line: int = 512 << 20,
         on_progress: Callable[[BackupReader, TableHeader, int], None] | None = None,
         parse_rows: bool = True, keys: Keys = NO_KEYS) -> Contents:
    """Read the whole file once and check it; returns its metadata and table list (no rows are kept).
    parse_rows=False only counts rows (fast; for row counts before a restore that checks every row anyway)."""
    with BackupReader(path, max_line, parse_rows=parse_rows, keys=keys) as reader:
        tables: list[TableHeader] = []
        chunks = None
        for table in reader.tables():
            rows = 0
            for batch in table.batches():
                rows += len(batch)
                if on_progress:
                    on_progress(reader, table.header, rows)
            if table.header.kind == LARGE_OBJECTS:
                chunks = rows
            else:
                tables.append(table.header)
        return Contents(reader.metadata, tables, reader.src.uncompressed, large_object_chunks=chunks)


def read_metadata(path: Path, max_line: int = 512 << 20, keys: Keys = NO_KEYS) -> BackupMetadata:
    """The metadata at the head of the file, without reading the rows (generic files: parsed up to it). Of an
    encrypted file only the first chunks are decrypted: the thread stops when the reader is closed."""
    with BackupReader(Path(path), max_line, keys=keys) as reader:
        if reader.metadata is None:
            for table in reader.tables():
                for _ in table.batches():
                    pass
        return reader.metadata


def read_contents_fast(path: Path, max_line: int = 512 << 20, keys: Keys = NO_KEYS) -> Contents | None:
    """The table of contents from the metadata alone, when the file carries one; None otherwise."""
    meta = read_metadata(path, max_line, keys)
    if not meta.contents:
        return None
    tables = [TableHeader(c.key, c.schema_name, c.name, list(c.columns), list(c.column_types)) for c in meta.contents]
    return Contents(meta, tables)
