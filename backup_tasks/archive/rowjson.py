"""Rows as JSON lines, and JSON lines as COPY input: bulk byte operations instead of per-value Python.

Measured on this machine: orjson.dumps of a whole batch costs ~30 ns a row, but one call per row costs
1-2 µs (each result is a separate allocation above pymalloc's limit). A raw newline can never occur inside a
JSON string, so a newline fragment between rows marks row boundaries unambiguously.
"""

from __future__ import annotations

import re
from itertools import chain, repeat
from typing import Any, Sequence

import orjson

_NEWLINE = orjson.Fragment(b"\n")


def dump_rows(rows: Sequence[Any]) -> bytes:
    """`[..],\\n[..]`: each row as compact JSON on its own line (no trailing newline)."""
    if not rows:
        return b""
    data = orjson.dumps(list(chain.from_iterable(zip(rows, repeat(_NEWLINE)))))
    # data is b'[[r1],\n,[r2],\n]': drop the outer brackets and the separators' extra commas.
    return data[1:-3].replace(b",\n,", b",\n")


def is_canonical(rows: list, body: bytes) -> bool:
    """True when `body` (lines `[..],\\n[..]`) is exactly what dump_rows(rows) would write."""
    return orjson.dumps(rows) == b"[" + body.replace(b",\n", b",") + b"]"


_UNICODE_ESCAPE = re.compile(rb"\\u00([01][0-9a-f])")


def lines_to_copy_text(lines: bytes) -> bytes:
    """Canonical JSON lines (dump_rows output) to COPY's text format, in bulk byte operations.

    JSON's string escapes \\n \\t \\r \\b \\f \\\\ are also COPY text escapes with the same meaning, so string
    contents pass through unchanged except escaped quotes (a plain " in COPY text) and \\u00XX (COPY's \\xXX).
    What changes is the structure outside strings: with escaped backslashes and quotes set aside (NUL and 0x01
    never occur raw in JSON), every remaining " delimits a string, so splitting on it separates the parts
    outside strings, where `,` becomes a tab, `null` becomes \\N and `],\\n[` ends a line. The server parses
    this format ~20% faster than CSV (measured on the benchmark's mixed table).
    """
    if not lines:
        return b""
    data = lines
    backslashes = b"\\\\" in data
    if backslashes:
        data = data.replace(b"\\\\", b"\x00")
    quotes = b'\\"' in data
    if quotes:
        data = data.replace(b'\\"', b"\x01")
    parts = data.split(b'"')
    outside = b"\x02".join(parts[0::2])
    outside = outside.replace(b"],\n[", b"\n").replace(b",", b"\t").replace(b"null", b"\\N")
    parts[0::2] = outside[1:-1].split(b"\x02")
    data = b"".join(parts)
    if quotes:
        data = data.replace(b"\x01", b'"')
    if b"\\u" in data:  # orjson writes \u00XX only for control characters other than \b \f \n \r \t
        data = _UNICODE_ESCAPE.sub(rb"\\x\1", data)
    if backslashes:
        data = data.replace(b"\x00", b"\\\\")
    return data + b"\n"
