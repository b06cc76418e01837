"""Progress reporting from the core to whoever runs it (a Celery task, the CLI's progress bar, nothing).

The core calls a ProgressFn; Throttle keeps that to a few calls a second so a task's state writes
to Redis never cost more than the work they describe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass
class Progress:
    phase: str  # "backup" | "diff" | "restore" | "verify" | "upload" | "download"
    table: str | None = None
    rows_done: int = 0
    rows_total: int | None = None
    bytes_done: int = 0
    bytes_total: int | None = None
    message: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


ProgressFn = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    pass


class Throttle:
    """Forward at most one progress event every `interval` seconds (the last one is always forwarded by flush)."""

    def __init__(self, fn: ProgressFn | None, interval: float = 0.25):
        self._fn = fn or no_progress
        self._interval = interval
        self._last = 0.0
        self._pending: Progress | None = None

    def __call__(self, event: Progress, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self._interval:
            self._last = now
            self._pending = None
            self._fn(event)
        else:
            self._pending = event

    def flush(self) -> None:
        if self._pending is not None:
            event, self._pending = self._pending, None
            self._fn(event)
