"""A bounded hand-off from one producer thread to its consumer.

Both pipelines (prefetching rows for a backup, encoding rows for a COPY) overlap Python work with libpq, which
releases the GIL while it waits. The queue is bounded so memory stays flat, and the producer gives up as soon
as the consumer stops (an error, Ctrl-C, a time limit) instead of blocking forever on a full queue.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any


class Handoff:
    """Items from the producer to the consumer, bounded by count and, when `max_bytes` is given, by bytes.

    The bytes held are those of the queued items plus the item the consumer took last, released when it asks for
    the next one (get): it is still being sent or written until then. A counted bound alone let a table of 5 MB
    rows hold maxsize + 2 rows at once (queued, being sent, being built); with the bytes bound, the producer
    waits while what is held plus its item would exceed `max_bytes`, and an item goes through whenever nothing
    is held, so an item larger than the budget still passes, alone."""

    def __init__(self, maxsize: int, max_bytes: int | None = None):
        self._maxsize = maxsize
        self._max_bytes = max_bytes
        self._items: deque[tuple[Any, int]] = deque()
        self._held = 0  # bytes of the queued items and of the consumer's current one
        self._taken = 0  # bytes of the consumer's current item
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def put(self, item: Any, nbytes: int = 0) -> bool:
        """Queue `item` (of `nbytes` bytes); False once the consumer has stopped (the producer should return)."""
        with self._changed:
            while not self._has_room(nbytes):
                if self._stop.is_set():
                    return False
                self._changed.wait(0.2)
            if self._stop.is_set():
                return False
            self._items.append((item, nbytes))
            self._held += nbytes
            self._changed.notify_all()
        return True

    def _has_room(self, nbytes: int) -> bool:
        if len(self._items) >= self._maxsize:
            return False
        return self._max_bytes is None or self._held == 0 or self._held + nbytes <= self._max_bytes

    def get(self) -> Any:
        """The next item; the previous one's bytes are released (the consumer is done with it)."""
        with self._changed:
            self._held -= self._taken
            self._taken = 0
            self._changed.notify_all()
            while not self._items:
                self._changed.wait()
            item, self._taken = self._items.popleft()
            self._changed.notify_all()
            return item

    @property
    def held_bytes(self) -> int:
        return self._held

    def start(self, produce: Callable[[], None], name: str) -> None:
        """Run `produce` in a new thread: the producer."""
        self._thread = threading.Thread(target=produce, name=name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the producer and wait for it (it finishes its current step first)."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join()


def yield_to_server(niceness: int = 5) -> None:
    """Lower the calling thread's scheduling priority a little (Linux: nice applies per thread).

    A restore's producer thread competes for the same cores with the PostgreSQL backend whose COPY paces the
    restore (and with its WAL writer). Measured at 3 M rows on 2 cores, alternating pairs against nice 0: nice 15
    was faster in 4 of 5 pairs (median 0.5 s of ~12 s), nice 5 in 3 of 3 (0.25-0.96 s). Nice 5 rather than more:
    on a busy host a heavily deprioritised restore would hold its table locks longer. Lowering one's own
    priority needs no privilege; elsewhere, or if refused, nothing changes."""
    if not sys.platform.startswith("linux"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (OSError, AttributeError):
        pass
