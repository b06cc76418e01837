"""Reading a process's memory figures from /proc (Linux), for bench/run.py and bench/_child.py."""

from __future__ import annotations

import os


def status_kb(pid: int | str, field: str) -> int | None:
    """A `kB` field of /proc/<pid>/status ("VmHWM", "VmRSS"); None when the process or field is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def process_tree(pid: int) -> list[int]:
    """pid and its descendants, from /proc/<pid>/task/<tid>/children."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            pass
    return found
