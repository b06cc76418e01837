"""Fix glibc's malloc thresholds, so the half-megabyte buffers of a restore or diff are fast and memory stays flat.

glibc's default is dynamic: it starts at 128 KiB and raises its mmap threshold each time a large mmap'd block
is freed (up to 32 MB). Measured on the benchmark (3 M rows):

- dynamic (the default): peak RSS of a restore grew from 85 to 98-114 MB between a 750 k and a 3 M row database;
- pinned at 128 KiB: every buffer got its own mapping, returned when freed. RSS was flat (68 MB), but each of the
  ~10 bytes operations per 1 MB block faulted its pages in afresh: 5-6 s of system time in a 15 s restore;
- pinned at 64 MiB with trimming above 128 MiB, with 512 KiB blocks (reader.BATCH_BYTES, copy_in.CHUNK_BYTES):
  buffers are reused from the heap, 0.5 s of system time, restore 10.9 s, and peak RSS 66-69 MB at both sizes.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def pin_mmap_threshold(size: int = 64 << 20, trim: int = 128 << 20) -> None:
    global _done
    if _done:
        return
    _done = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, size)  # fixed: no longer adjusted by glibc
        libc.mallopt(_M_TRIM_THRESHOLD, trim)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to pin
        pass


def release_freed_memory() -> None:
    """Give the heap's free memory back to the system, after a job in a long-lived worker process.

    The trim threshold above keeps up to 128 MiB of freed heap for reuse while a job runs; a pool process that then
    waits hours for its next job would hold it all that time, and the next job's peak would start from there (the
    benchmark's worker processes grew 98 → 112 MB over three backups, 164 MB for a diff after them)."""
    import gc

    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: its allocator returns memory its own way
        pass
