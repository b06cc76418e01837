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


def reset_peak_rss() -> bool:
    """Start this process's peak-RSS count afresh (Linux: "5" to /proc/self/clear_refs resets VmHWM), so a job in a
    long-lived worker process measures its own peak, not the worker's since it started. False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int | None:
    """This process's peak resident set size (VmHWM) since it started or since reset_peak_rss()."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def children_peak_rss_bytes() -> int:
    """The largest peak RSS of any child process this process has waited for (getrusage counts no reset: the
    largest child of the process's life, e.g. a diff's reader)."""
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
