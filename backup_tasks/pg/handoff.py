"""A bounded hand-off from one producer thread to its consumer.

Both pipelines (prefetching rows for a backup, encoding rows for a COPY) overlap Python work with libpq, which
releases the GIL while it waits. The queue is bounded so memory stays flat, and the producer gives up as soon
as the consumer stops (an error, Ctrl-C, a time limit) instead of blocking forever on a full queue.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable


class Handoff:
    def __init__(self, maxsize: int):
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def put(self, item: Any) -> bool:
        """Queue `item`; False once the consumer has stopped (the producer should return)."""
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def get(self) -> Any:
        return self._q.get()

    def start(self, produce: Callable[[], None], name: str) -> None:
        """Run `produce` in a new thread; several producers may share one hand-off (the diff's two sides)."""
        thread = threading.Thread(target=produce, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def close(self) -> None:
        """Stop the producers and wait for them (each finishes its current step first)."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
