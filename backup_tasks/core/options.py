"""What the engine may be told, as one value built at the edge (jobs/ from the settings, a test, a drill).

The engine never reads settings itself: whoever calls it decides, so a task, a test and a drill can each pass
their own without touching the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..archive.encryption import NO_KEYS, Keys

MiB = 1 << 20


@dataclass(frozen=True)
class EngineOptions:
    lock_timeout_s: float = 60.0  # how long a backup or restore waits for its table locks
    max_line_bytes: int = 512 * MiB  # largest single row a reader accepts (bounds memory on hostile files)
    compress_level: int = 1  # isal gzip level 0-3
    rebuild_indexes_min_rows: int = 10_000  # a restore builds a table's indexes after its load from this many rows
    # Rows are fetched, serialised and compressed in batches of about this many bytes (never fewer than one row):
    # memory follows the bytes in flight, not a row count, so a table of multi-MB rows costs what a narrow one does.
    batch_bytes: int = 4 * MiB
    refresh_views: bool = True  # a restore refreshes the populated materialized views over what it restored
    # A parallel backup splits a table bigger than this (heap and TOAST) into page ranges of about half of it, and
    # groups smaller tables into parts of about that size.
    split_min_bytes: int = 128 * MiB
    # age: the public keys every backup is encrypted to (none: not encrypted), the identity file readers decrypt with.
    keys: Keys = NO_KEYS

    def with_(self, **changes) -> EngineOptions:
        return replace(self, **changes)
