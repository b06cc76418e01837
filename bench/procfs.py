"""Reading process figures from /proc (Linux): memory, CPU time, the process tree, process titles.

Everything returns None (or an empty list) for a process that has gone: the benchmark samples processes that
start and end while it looks.
"""

from __future__ import annotations

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


def status_kb(pid: int | str, field: str) -> int | None:
    """A `kB` field of /proc/<pid>/status ("VmHWM", "VmRSS"); None when the process or field is gone."""
    text = _read(f"/proc/{pid}/status")
    for line in (text or "").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def rss_kb(pid: int) -> int:
    """Current resident set of one process, from /proc/<pid>/statm (cheaper to parse than status); 0 if gone."""
    text = _read(f"/proc/{pid}/statm")
    return int(text.split()[1]) * PAGE_KB if text else 0


def pss_kb(pid: int) -> int:
    """Proportional set size of one process (each shared page divided among the processes mapping it), from
    /proc/<pid>/smaps_rollup; 0 if gone. Costlier than rss_kb (the kernel walks the page tables): sampled less."""
    text = _read(f"/proc/{pid}/smaps_rollup")
    for line in (text or "").splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    """Direct children of pid (every thread's list: a child belongs to the thread that forked it)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        text = _read(f"/proc/{pid}/task/{task}/children")
        if text:
            found.extend(int(c) for c in text.split())
    return found


def process_tree(pid: int) -> list[int]:
    """pid and its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children(current))
    return found


def tree_rss_kb(pid: int) -> int:
    return sum(rss_kb(p) for p in process_tree(pid))


def cpu_ticks(pid: int, with_children: bool = True) -> int | None:
    """utime + stime of pid, plus (with_children) the times of the children it has reaped, in clock ticks."""
    text = _read(f"/proc/{pid}/stat")
    if not text:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields are counted after the last ')'.
    fields = text[text.rindex(")") + 2:].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    if with_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks


def parent(pid: int) -> int | None:
    value = status_kb(pid, "PPid")  # not in kB, but the same "Name: value" form
    return int(value) if value is not None else None


def cmdline(pid: int) -> str:
    """The process title (PostgreSQL backends put user, database and client there), '' when gone."""
    text = _read(f"/proc/{pid}/cmdline")
    return text.replace("\0", " ").strip() if text else ""
