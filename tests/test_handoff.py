"""pg/handoff.py's bound in bytes (issue 19): what the producer has handed over and the consumer has not finished
with never exceeds the budget, except for one item alone; and the bound in items still holds.

The consumer is slow on purpose (a short sleep per item), so an unbounded producer would run ahead; nothing
is asserted about time. Before the bound in bytes, a table of 5 MB rows had maxsize + 1 of them handed over
at once (three queued, one being sent).
"""

from __future__ import annotations

import threading
import time

from backup_tasks.pg.copy_in import CHUNK_BYTES, IN_FLIGHT_BYTES, _QueueReader
from backup_tasks.pg.handoff import Handoff


class _Ledger:
    """Bytes handed over (put returned) and not yet finished by the consumer, and the most seen at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.outstanding: list[int] = []
        self.worst: list[int] = []

    def handed(self, nbytes: int) -> None:
        with self._lock:
            self.outstanding.append(nbytes)
            if sum(self.outstanding) > sum(self.worst):
                self.worst = list(self.outstanding)

    def finished(self) -> None:
        with self._lock:
            self.outstanding.pop(0)


def _run(sizes: list[int], maxsize: int, max_bytes: int | None) -> _Ledger:
    handoff = Handoff(maxsize=maxsize, max_bytes=max_bytes)
    ledger = _Ledger()

    def produce() -> None:
        for n in sizes:
            # Counted before put returns: the consumer may take and finish the item before handed() runs.
            ledger.handed(n)
            if not handoff.put(n, n):
                return
        handoff.put(None)

    handoff.start(produce, "test-producer")
    try:
        while (item := handoff.get()) is not None:
            time.sleep(0.002)  # the consumer is the slow side
            assert item in sizes
            ledger.finished()  # done with it: the next get() releases its bytes
    finally:
        handoff.close()
    return ledger


def test_items_larger_than_the_budget_are_handed_over_one_at_a_time():
    budget = 4 << 20
    ledger = _run([7 << 20] * 12, maxsize=3, max_bytes=budget)
    # One item taken by the consumer; the next may be counted by the producer just before its put() waits.
    assert len(ledger.worst) <= 2, ledger.worst


def test_the_bytes_held_stay_within_the_budget_plus_one_item():
    budget = 4 << 20
    sizes = [(1 + i % 5) << 19 for i in range(60)]  # 0.5-2.5 MB
    ledger = _run(sizes, maxsize=50, max_bytes=budget)
    assert sum(ledger.worst) <= budget + max(sizes), ledger.worst


def test_without_a_byte_budget_the_bound_is_the_number_of_items():
    ledger = _run([1] * 40, maxsize=3, max_bytes=None)
    assert len(ledger.worst) <= 3 + 2, ledger.worst  # queued, the consumer's, and the one being put


def test_a_producer_waiting_for_room_stops_when_the_consumer_stops():
    handoff = Handoff(maxsize=3, max_bytes=10)
    results: list[bool] = []
    handoff.start(lambda: results.extend([handoff.put("a", 8), handoff.put("b", 8)]), "test-producer")
    assert handoff.get() == "a"  # held: "b" does not fit beside it
    handoff.close()
    assert results == [True, False]


def test_the_copy_reader_hands_libpq_a_big_chunk_in_pieces():
    handoff = Handoff(maxsize=3, max_bytes=IN_FLIGHT_BYTES)
    big = bytes(range(256)) * (7 * CHUNK_BYTES // 256 + 3)  # one 3.5 MB row, not a multiple of the piece size
    handoff.put((big, "mark"), len(big))
    handoff.put(None)
    marks: list = []
    reader = _QueueReader(handoff, marks.append)
    pieces = list(iter(lambda: reader.read(CHUNK_BYTES), b""))
    assert b"".join(pieces) == big and marks == ["mark"]
    assert max(map(len, pieces)) == CHUNK_BYTES and reader.ended
