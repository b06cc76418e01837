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
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def _libc() -> ctypes.CDLL:
    """The C library this process runs on. On Linux the process's own global symbols (dlopen(NULL)) hold it:
    ctypes.util.find_library would run `ldconfig -p` in a subprocess, a fork and exec in every command's start-up."""
    if sys.platform.startswith("linux"):
        return ctypes.CDLL(None)
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def pin_mmap_threshold(size: int = 64 << 20, trim: int = 128 << 20) -> None:
    global _done
    if _done:
        return
    _done = True
    try:
        libc = _libc()
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
        libc = _libc()
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: its allocator returns memory its own way
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


def resident_kb() -> int:
    """This process's resident set now, in kB (0 where /proc is not there)."""
    import os

    return _statm_rss_pages(os.getpid()) * os.sysconf("SC_PAGE_SIZE") // 1024


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


class TreePeak:
    """The peak resident set of this process and its children together, sampled every `interval_s` by a thread
    while the block runs (a job's helper processes, e.g. a diff's row reader, are part of its memory).

    Sampled, so a spike shorter than the interval may be missed; the process's own peak (peak_rss_bytes) is exact.
    getrusage's RUSAGE_CHILDREN is no substitute: a child's count includes the parent's pages at fork time."""

    def __init__(self, interval_s: float = 0.2):
        import threading

        self.interval_s, self.peak = interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backup_tasks-tree-peak", daemon=True)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        import os

        pids, page = [os.getpid()], os.sysconf("SC_PAGE_SIZE")
        total, seen = 0, 0
        while seen < len(pids):  # the process, then its descendants as /proc lists them
            pid = pids[seen]
            seen += 1
            total += _statm_rss_pages(pid) * page
            pids.extend(_children(pid))
        self.peak = max(self.peak, total)


def _statm_rss_pages(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _children(pid: int) -> list[int]:
    import os

    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out: list[int] = []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as f:
                out.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return out
