"""The machine is shared: before each measurement, wait (up to a limit) for others' work to quiet down, and
record how busy the CPUs were before and during it, so a table taken under load can be recognised."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

NCPU = os.cpu_count() or 1


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])
    return total - idle, total


def busy_cores_between(a: tuple[int, int], b: tuple[int, int]) -> float:
    return round(NCPU * (b[0] - a[0]) / max(b[1] - a[1], 1), 2)


@dataclass
class Quiet:
    max_wait_s: float = 60.0
    threshold_cores: float = 0.5
    window_s: float = 1.0

    def busy_now(self) -> float:
        a = cpu_jiffies()
        time.sleep(self.window_s)
        return busy_cores_between(a, cpu_jiffies())

    def wait(self) -> dict:
        """Until other work uses less than threshold_cores, at most max_wait_s; what was seen, either way."""
        if self.max_wait_s <= 0:
            return {}
        started = time.monotonic()
        load = self.busy_now()
        while load > self.threshold_cores and time.monotonic() - started < self.max_wait_s:
            load = self.busy_now()
        return {"busy_cores_before": load, "waited_s": round(time.monotonic() - started, 1)}
