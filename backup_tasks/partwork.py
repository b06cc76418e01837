"""A parallel backup's parts written by Celery workers: the parts in Redis (PartBoard: which are still to be
written, who writes which — a lease renewed while it works —, what each produced, what failed), the coordinator's
runner (BoardRunner, core/parallel.py's PartRunner) and the helpers' loop (help_with). No Celery here: tasks.py
sends the helper tasks.

The coordinator publishes the parts and takes them itself whenever none of the helper tasks does (so one worker
process completes a backup of any --jobs, part after part); helpers on other worker processes take them too.
A lease that lapses (its worker died) puts the part back, for anyone to take again while the snapshot lives.
Only the holder of a part's current lease can record its result, so a part written twice counts once.
Expiry is decided on Redis' own clock (TIME), so workers with skewed clocks agree.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import redis

from . import errors
from .core.destination import LocalPartStore, S3PartStore
from .core.parallel import PartStore
from .core.parts import PartResult, PartSpec, PartTask, part_failure, write_part
from .errors import BackupError, QueueError
from .queue_state import PREFIX, call
from .settings import get_settings
from .storage.factory import s3_storage

logger = logging.getLogger(__name__)

BOARD_TTL_S = 2 * 24 * 3600  # a board outlives any backup, then goes
# The board's state lives only while its coordinator renews it: when the coordinator dies (and its snapshot with
# it), helpers stop taking parts within this time, and results no longer count.
STATE_TTL_S = 60

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
# KEYS: pending (list), leases (zset index -> expiry), owners (hash), state. ARGV: owner, lease ms
_CLAIM = _NOW + """
if redis.call('GET', KEYS[4]) ~= 'running' then return false end
local index = redis.call('LPOP', KEYS[1])
if not index then return false end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), index)
redis.call('HSET', KEYS[3], index, ARGV[1])
return index
"""
# KEYS: leases, owners. ARGV: index, owner, lease ms
_RENEW = _NOW + """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
return 1
"""
# KEYS: leases, owners, results (hash), state. ARGV: index, owner, result JSON
_FINISH = """
if redis.call('GET', KEYS[4]) ~= 'running' then return 0 end
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
return 1
"""
# KEYS: pending, leases, owners. Lapsed leases: their parts back at the head of the list.
_REQUEUE = _NOW + """
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, index in ipairs(lapsed) do
  redis.call('ZREM', KEYS[2], index)
  redis.call('HDEL', KEYS[3], index)
  redis.call('LPUSH', KEYS[1], index)
end
return lapsed
"""


def owner_name() -> str:
    """Who writes a part: host, process, and a random token (a pid can be reused after a crash)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class PartBoard:
    def __init__(self, r: redis.Redis, job: str, lease_s: float | None = None):
        self.r, self.job = r, job
        self.lease_ms = int(1000 * (lease_s if lease_s is not None else get_settings().BACKUP_PART_LEASE_S))
        base = f"{PREFIX}parts:{job}:"
        self.keys = {name: base + name for name in
                     ("pending", "leases", "owners", "state", "specs", "task", "results", "failures", "progress")}

    def _k(self, *names: str) -> list[str]:
        return [self.keys[n] for n in names]

    # --- the coordinator ----------------------------------------------------------------------------------
    def publish(self, specs: dict[int, dict], order: list[int], task: dict[str, Any]) -> None:
        """The parts (index -> spec), the order to take them in, and what every part shares."""
        pipe = self.r.pipeline()
        pipe.delete(*self.keys.values())
        if specs:
            pipe.hset(self.keys["specs"], mapping={str(i): json.dumps(s) for i, s in specs.items()})
            pipe.rpush(self.keys["pending"], *[str(i) for i in order])
        pipe.set(self.keys["task"], json.dumps(task))
        for key in self.keys.values():
            pipe.expire(key, BOARD_TTL_S)
        pipe.set(self.keys["state"], "running", ex=STATE_TTL_S)
        call(pipe.execute)

    def keep_running(self) -> bool:
        """Renew the state's TTL (the coordinator's heartbeat); False once the board is no longer running."""
        return bool(self.r.set(self.keys["state"], "running", ex=STATE_TTL_S, xx=True))

    def requeue_lapsed(self) -> list[int]:
        lapsed = call(self.r.eval, _REQUEUE, 3, *self._k("pending", "leases", "owners"))
        return [int(i) for i in lapsed]

    def results(self) -> dict[int, dict]:
        return {int(i): json.loads(v) for i, v in call(self.r.hgetall, self.keys["results"]).items()}

    def failures(self) -> dict[int, dict]:
        return {int(i): json.loads(v) for i, v in call(self.r.hgetall, self.keys["failures"]).items()}

    def progress(self) -> tuple[int, int]:
        values = call(self.r.hmget, self.keys["progress"], "rows", "bytes")
        return int(values[0] or 0), int(values[1] or 0)

    def close(self, state: str) -> None:
        """'done' or 'abandoned': helpers stop taking parts; the board's keys go shortly after."""
        try:
            pipe = self.r.pipeline()
            pipe.set(self.keys["state"], state, ex=3600)
            pipe.delete(self.keys["pending"], self.keys["specs"], self.keys["task"])
            pipe.execute()
        except redis.RedisError:
            pass  # the keys expire anyway

    # --- whoever writes parts -----------------------------------------------------------------------------
    def state(self) -> str | None:
        value = call(self.r.get, self.keys["state"])
        return value.decode() if value else None

    def task(self) -> dict[str, Any] | None:
        value = call(self.r.get, self.keys["task"])
        return json.loads(value) if value else None

    def claim(self, owner: str) -> tuple[int, dict] | None:
        """The next part to write (its index and spec), leased to `owner`; None when none is waiting."""
        index = call(self.r.eval, _CLAIM, 4, *self._k("pending", "leases", "owners", "state"), owner,
                     self.lease_ms)
        if index is None:
            return None
        spec = call(self.r.hget, self.keys["specs"], index)
        if spec is None:
            raise QueueError(f"part {int(index) + 1} of backup job {self.job} has no description in Redis")
        return int(index), json.loads(spec)

    def renew(self, index: int, owner: str) -> bool:
        return bool(self.r.eval(_RENEW, 2, *self._k("leases", "owners"), str(index), owner, self.lease_ms))

    def finish(self, index: int, owner: str, result: dict) -> bool:
        """Record the part's result; False when the lease had lapsed and the part went to someone else, or the
        backup ended meanwhile (the caller then removes its output)."""
        return bool(call(self.r.eval, _FINISH, 4, *self._k("leases", "owners", "results", "state"), str(index),
                         owner, json.dumps(result)))

    def fail(self, index: int, error: dict) -> None:
        call(self.r.hset, self.keys["failures"], str(index), json.dumps(error))

    def add_progress(self, rows: int, size: int) -> None:
        pipe = self.r.pipeline()
        pipe.hincrby(self.keys["progress"], "rows", rows)
        pipe.hincrby(self.keys["progress"], "bytes", size)
        call(pipe.execute)


# --- writing a claimed part --------------------------------------------------------------------------------


PROGRESS_S = 0.5


class _Lease:
    """Renews a part's lease from a thread while the part is written (the GIL is released in libpq's waits and
    while a thread sleeps, so a busy writer still lets it run; a lapse costs a part written twice, never a part
    lost: only the current lease holder's result counts)."""

    def __init__(self, board: PartBoard, index: int, owner: str):
        self.board, self.index, self.owner = board, index, owner
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backup-tasks-part-lease", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.board.lease_ms / 5000):
            try:
                if not self.board.renew(self.index, self.owner):
                    return  # lapsed and taken by someone else: our result will not count
            except redis.RedisError:
                pass  # the next renewal may get through; the lease is long enough for a few misses

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.board.lease_ms / 5000 + 5)


def describe_store(store: PartStore) -> dict[str, str]:
    """How a helper finds the store the coordinator chose (it builds its own from its own settings)."""
    if isinstance(store, LocalPartStore):
        return {"kind": "local", "directory": str(store.directory)}
    if isinstance(store, S3PartStore):
        # The bucket and prefix too: the coordinator's are its database's (databases.py), not the settings'.
        return {"kind": "s3", "bucket": store.storage.bucket, "prefix": store.storage.prefix}
    raise ValueError(f"unknown part store {store!r}")


def store_from(description: dict[str, str]) -> PartStore:
    if description["kind"] == "local":
        return LocalPartStore(Path(description["directory"]))
    settings = get_settings()
    if description.get("bucket"):  # credentials and endpoint stay the helper's own
        settings = settings.model_copy(update={"S3_BUCKET_NAME": description["bucket"],
                                               "S3_PREFIX": description["prefix"]})
    return S3PartStore(s3_storage(settings))


def write_claimed(board: PartBoard, index: int, spec: dict, owner: str, shared: dict, store: PartStore,
                  tick: Callable[[int, int], None] | None = None) -> bool:
    """Write one claimed part (a part written twice never shares an output: the owner's token is in its name) and
    record the result; a failure is recorded for the coordinator (the whole backup fails, naming the part).
    False when the result did not count."""
    part = PartSpec.from_dict(spec)
    sink, output = store.open(board.job, f"{index:05d}-{owner.rsplit(':', 1)[-1]}")
    task = PartTask(**shared["task"])
    pending = _Ticks(board, tick)
    try:
        with _Lease(board, index, owner):
            result = write_part(part, task, sink, output, pending.add)
        result.writer = owner
    except BaseException as exc:
        store.remove(output)
        board.fail(index, part_failure(part, exc).to_dict())
        if not isinstance(exc, Exception):
            raise
        return False
    pending.flush()
    if not board.finish(index, owner, result.to_dict()):
        store.remove(output)
        return False
    return True


class _Heartbeat:
    """The coordinator's: renews the board's state every few seconds, also while the coordinator writes a part."""

    def __init__(self, board: PartBoard):
        self.board = board
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backup-tasks-board", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(STATE_TTL_S / 6):
            try:
                self.board.keep_running()
            except redis.RedisError:
                pass  # the coordinator's own calls raise QueueError, failing the backup

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class _Ticks:
    """A part's progress, added to the board's totals a few times a second (and to the writer's own bar)."""

    def __init__(self, board: PartBoard, tick: Callable[[int, int], None] | None):
        self.board, self.tick = board, tick
        self.rows = self.bytes = 0
        self.last = time.monotonic()

    def add(self, rows: int, size: int) -> None:
        self.rows += rows
        self.bytes += size
        if self.tick is not None:
            self.tick(rows, size)
        if time.monotonic() - self.last > PROGRESS_S:
            self.flush()

    def flush(self) -> None:
        if self.rows or self.bytes:
            try:
                self.board.add_progress(self.rows, self.bytes)
            except BackupError:
                pass  # progress only
            self.rows = self.bytes = 0
        self.last = time.monotonic()


def help_with(board: PartBoard, tick: Callable[[int, int], None] | None = None) -> int:
    """A helper task's work: take parts until none is waiting (or the backup ended); how many it wrote."""
    shared = board.task()
    if shared is None or board.state() != "running":
        return 0  # the backup ended before this helper started (or a redelivery after it ended)
    owner, written, store = owner_name(), 0, store_from(shared["store"])
    while board.state() == "running" and (claimed := board.claim(owner)) is not None:
        index, spec = claimed
        written += write_claimed(board, index, spec, owner, shared, store, tick)
    return written


# --- the coordinator's runner --------------------------------------------------------------------------------

class BoardRunner:
    """core/parallel.py's PartRunner on Celery workers: the parts go on the board; `send_helpers(n)` (tasks.py)
    asks for n helper tasks (on this worker's own node when the parts go to its local directory); the coordinator
    takes parts itself whenever none is waiting for a helper, so one worker process completes any --jobs."""

    POLL_S = 0.2

    def __init__(self, r: redis.Redis, job: str, jobs: int, store: PartStore, send_helpers: Callable[[int], None]):
        self.board = PartBoard(r, job)
        self.jobs, self.store, self.send_helpers = jobs, store, send_helpers
        self.owner = owner_name()

    def run(self, parts: list[PartSpec], task: PartTask, on_done, keepalive, progress) -> None:
        order = [p.index for p in sorted(parts, key=lambda p: -p.estimate)]  # the biggest first
        shared = {"task": asdict(task), "store": describe_store(self.store)}
        self.board.publish({p.index: p.to_dict() for p in parts}, order, shared)
        heartbeat = _Heartbeat(self.board)
        try:
            with heartbeat:
                self.send_helpers(min(self.jobs, len(parts)) - 1)
                self._until_done(len(parts), shared, on_done, keepalive, progress)
            self.board.close("done")
        except BaseException:
            self.board.close("abandoned")
            self.store.remove_all(self.board.job)
            raise
        self._sweep_after_success()

    def _sweep_after_success(self) -> None:
        """Every delivered part was removed as it was assembled; what is left is the output of a writer that died
        mid-part (SIGKILL, OOM: nobody else knows its name). The backup is complete, so failing to sweep is only
        logged; the destination's stale-part sweep gets it later."""
        try:
            self.store.remove_all(self.board.job)
        except Exception as exc:  # noqa: BLE001 - the backup is written; this is housekeeping
            logger.warning("could not remove leftover parts of backup job %s: %s", self.board.job, exc)

    def _until_done(self, count: int, shared: dict, on_done, keepalive, progress) -> None:
        delivered: set[int] = set()
        reported = (0, 0)
        while len(delivered) < count:
            keepalive()
            self.board.requeue_lapsed()
            failures = self.board.failures()
            if failures:
                raise errors.from_dict(failures[min(failures)])
            for index, result in sorted(self.board.results().items()):
                if index not in delivered:
                    delivered.add(index)
                    on_done(PartResult.from_dict(result))
            rows, size = self.board.progress()
            progress(rows - reported[0], size - reported[1])
            reported = (rows, size)
            if len(delivered) < count:
                claimed = self.board.claim(self.owner)
                if claimed is not None:
                    write_claimed(self.board, *claimed, self.owner, shared, self.store)
                else:
                    time.sleep(self.POLL_S)

    def read(self, output: str) -> Iterator[bytes]:
        return self.store.read(output)

    def remove(self, output: str) -> None:
        self.store.remove(output)
