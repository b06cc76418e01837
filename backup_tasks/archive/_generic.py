"""Event-stream reader for backup documents not in this tool's line layout (any valid JSON of the seed's shape).

Slower than the line reader (ijson's C backend), but still streaming: only one batch of rows and the current
table's header are held at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import ijson

from ..errors import InvalidBackupError

_BATCH = 2000
READ_BYTES = 1 << 20
# One value (a row, the metadata, a table's header field) may span at most this much of the document, or
# max_line if smaller: a value is built in memory, and its Python objects take up to ~10x its JSON text.
VALUE_BYTES = 64 << 20
_LIMIT_HINT = ("In files not in this tool's line layout one value may span at most 64 MB (or "
               "BACKUP_MAX_LINE_BYTES if smaller); a larger one is most likely a damaged or hostile file.")


def _first_line(exc: BaseException) -> str:
    """yajl's messages span several lines with a caret diagram; errors here are one line."""
    return (str(exc).strip().splitlines() or ["?"])[0][:120]


def _number(value: Any) -> Any:
    """A JSON number as the rest of the reader expects it: an int when it fits in 64 bits, otherwise the
    number's own text (a Decimal keeps the digits as written: `1.10` stays `1.10`, not the float 1.1). PostgreSQL
    parses that text with the column's input function, exactly as it would parse the number."""
    if type(value) is int:
        return value if -(1 << 63) <= value < (1 << 63) else str(value)
    if isinstance(value, Decimal):
        return str(value)
    return value


def _bad(message: str) -> InvalidBackupError:
    return InvalidBackupError(message)


class _Feed:
    """What ijson reads: the decompressed document, counted, refusing more than `limit` bytes without an event.

    yajl keeps an unfinished token (the endless string or number of a decompression bomb) in memory, re-scanning
    it on every read, and collects all the events of one read before handing out the first: reads of 1 MB
    bound the second, `limit` bounds the first (and refuses an endless run of whitespace).
    """

    def __init__(self, source, limit: int, name: str):
        self._source = source
        self.limit = limit
        self.name = name
        self.total = 0  # bytes handed to the parser
        self.mark = 0  # `total` when the parser last produced an event

    def read(self, n: int) -> bytes:
        if self.total - self.mark > self.limit:
            raise InvalidBackupError(f"{self.name}: a JSON value (or a run of whitespace) is longer than "
                                     f"{self.limit} bytes", _LIMIT_HINT)
        data = self._source.read(n)
        self.total += len(data)
        return data


class GenericParser:
    def __init__(self, source, name: str, make_header: Callable[[Any, Any], Any], max_line: int = 512 << 20):
        self.name = name
        self._limit = min(max_line, VALUE_BYTES)
        self._feed = _Feed(source, self._limit, name)
        self._value_from: int | None = None  # where the value being built started (bounded by _limit)
        # use_float=False: with use_float=True ijson's C backend (yajl) parses integers as C long long and
        # rejects -9223372036854775808 (int8's minimum) and any larger integer with "integer overflow", so a
        # valid file holding them could not be restored. Numbers come back as int / Decimal; _number() maps them.
        self._events = self._wrap(ijson.basic_parse(self._feed, buf_size=READ_BYTES, use_float=False))
        self._make_header = make_header
        self.metadata: Any = None
        self._pending_key: str | None = None
        self._started = False

    def _wrap(self, events) -> Iterator[tuple[str, Any]]:
        try:
            yield from events
        except ijson.common.IncompleteJSONError as exc:
            raise _bad(f"{self.name} is truncated or not valid JSON ({_first_line(exc)})") from None
        except ijson.common.JSONError as exc:
            raise _bad(f"{self.name} is not valid JSON ({_first_line(exc)})") from None
        except UnicodeDecodeError:
            raise _bad(f"{self.name} is not UTF-8 JSON") from None

    def _next(self) -> tuple[str, Any]:
        try:
            item = next(self._events)
        except StopIteration:
            raise _bad(f"{self.name} ends early (truncated JSON)") from None
        feed = self._feed
        feed.mark = feed.total
        if self._value_from is not None and feed.total - self._value_from > self._limit:
            raise InvalidBackupError(f"{self.name}: a JSON value is longer than {self._limit} bytes", _LIMIT_HINT)
        return item

    def _build(self, event: str, value: Any) -> Any:
        """The value that starts with (event, value), built in memory from at most _limit bytes of input."""
        self._value_from = self._feed.total
        try:
            return self._build_value(event, value)
        finally:
            self._value_from = None

    def _build_row(self, event: str, header, row_number: int) -> list[Any]:
        """One row, refused as soon as it holds more values than columns or a nested value: building it whole
        first let one hostile row of millions of values exhaust memory before its width was checked."""
        if event != "start_array":
            raise _bad(f"table {header.key!r}: a row near row {row_number} is not an array")
        width = len(header.columns)
        row: list[Any] = []
        self._value_from = self._feed.total
        try:
            while True:
                ev, val = self._next()
                if ev == "end_array":
                    return row
                if ev in ("start_array", "start_map"):
                    kind = "list" if ev == "start_array" else "dict"
                    raise _bad(f"table {header.key!r}: values of type {kind} near row {row_number}; "
                               "values must be strings, numbers, booleans or null")
                if len(row) == width:
                    raise _bad(f"table {header.key!r}: row {row_number} has more than {width} values, "
                               f"expected {width} (one per column)")
                row.append(_number(val) if ev == "number" else val)
        finally:
            self._value_from = None

    def _build_value(self, event: str, value: Any) -> Any:
        if event == "start_map":
            obj: dict[str, Any] = {}
            while True:
                ev, val = self._next()
                if ev == "end_map":
                    return obj
                obj[val] = self._build_value(*self._next())
        if event == "start_array":
            arr: list[Any] = []
            while True:
                ev, val = self._next()
                if ev == "end_array":
                    return arr
                arr.append(self._build_value(ev, val))
        if event in ("end_map", "end_array", "map_key"):
            raise _bad(f"{self.name} is not valid JSON")
        if event == "number":
            return _number(value)
        return value

    def _start(self) -> None:
        if not self._started:
            self._started = True
            ev, _ = self._next()
            if ev != "start_map":
                raise _bad(f"{self.name} is not a backup: the document must be a JSON object")

    def metadata_if_first(self) -> Any:
        self._start()
        ev, key = self._next()
        if ev == "end_map":
            raise _bad(f"{self.name} is not a backup: it has no `metadata` or `tables`")
        if key == "metadata":
            self.metadata = self._build(*self._next())
            return self.metadata
        self._pending_key = key
        return None

    def _top_keys(self) -> Iterator[str]:
        if self._pending_key is not None:
            key, self._pending_key = self._pending_key, None
            yield key
        while True:
            ev, key = self._next()
            if ev == "end_map":
                break
            yield key
        try:
            next(self._events)
        except StopIteration:
            return
        raise _bad(f"{self.name} has data after the end of the document")

    def tables(self, check_rows: Callable[[Any, Any, int], None]) -> Iterator[Any]:
        from .reader import LARGE_OBJECTS, TableRows, large_objects_header

        seen_tables = False
        for key in self._top_keys():
            if key == "metadata":
                self.metadata = self._build(*self._next())
            elif key == "tables":
                if seen_tables:
                    raise _bad(f"{self.name} has two `tables` objects")
                seen_tables = True
                ev, _ = self._next()
                if ev != "start_map":
                    raise _bad(f"{self.name}: `tables` must be an object")
                while True:
                    ev, tkey = self._next()
                    if ev == "end_map":
                        break
                    yield from self._table(tkey, check_rows, TableRows)
            elif key == LARGE_OBJECTS:
                yield from self._table(key, check_rows, TableRows,
                                       lambda _, fields: large_objects_header(fields, self.name))
            else:
                self._build(*self._next())  # unknown top-level field: tolerated, ignored
        if not seen_tables:
            raise _bad(f"{self.name} has no `tables` object")

    def _table(self, key: str, check_rows, TableRows, make_header=None) -> Iterator[Any]:
        ev, _ = self._next()
        if ev != "start_map":
            raise _bad(f"{self.name}: table {key!r} must be an object")
        fields: dict[str, Any] = {}
        header = None
        state = {"rows": 0}
        while True:
            ev, fkey = self._next()
            if ev == "end_map":
                break
            if fkey == "data":
                if header is not None:
                    raise _bad(f"{self.name}: table {key!r} has two `data` arrays")
                header = (make_header or self._make_header)(key, fields)
                yield TableRows(header, self._rows(header, check_rows, state))
                if not state.get("done"):
                    for _ in self._rows(header, check_rows, state):
                        pass
            else:
                fields[fkey] = self._build(*self._next())
                if header is not None and fkey == "row_count":
                    header.row_count = None  # checked below against what was read
        if header is None:
            raise _bad(f"{self.name}: table {key!r} has no `data`")
        count = fields.get("row_count")
        if type(count) is not int or count != state["rows"]:
            raise _bad(f"{self.name}: table {key!r}: row_count says {count} but the data holds {state['rows']} rows")
        header.row_count = state["rows"]

    def _rows(self, header, check_rows, state) -> Iterator[list[list[Any]]]:
        if not state.get("opened"):
            ev, _ = self._next()
            if ev != "start_array":
                raise _bad(f"{self.name}: table {header.key!r}: `data` must be an array of rows")
            state["opened"] = True
        batch: list[Any] = []
        while True:
            ev, _ = self._next()
            if ev == "end_array":
                break
            batch.append(self._build_row(ev, header, state["rows"] + len(batch) + 1))
            if len(batch) >= _BATCH:
                check_rows(batch, header, state["rows"])
                state["rows"] += len(batch)
                yield batch
                batch = []
        if batch:
            check_rows(batch, header, state["rows"])
            state["rows"] += len(batch)
            yield batch
        state["done"] = True
