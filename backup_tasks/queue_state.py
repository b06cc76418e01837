"""What the queue keeps in Redis (the broker's Redis): job liveness, schedule slots, delivery counts.

The per-database job lock is not here: PostgreSQL holds it (pg/joblock.py), so it is freed the moment its
holder dies and the --local path takes the same one.

Liveness: while a task runs, a daemon thread keeps `alive:<task id>` with a short TTL (LIVENESS_TTL_S, renewed
every LIVENESS_RENEW_S). A killed process renews nothing, so a client waiting on a STARTED job whose key has
been gone for LOST_AFTER_S knows the worker died, about 20 s after the kill. The key only tells a waiting
client; a renewal that comes late never lets two jobs run at once (the lock does not depend on it).

Schedule slots: scheduled_backup claims `slot:<database>:<slot>` with SET NX, holding its own task id, so a
second Beat or a redelivered message finds the slot taken and makes no second backup.

Delivery counts: how often one attempt of a late-acknowledged job was delivered, so a job that kills its
worker every time stops after a few deliveries (celery#9082).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from . import dsn
from .errors import QueueError
from .settings import get_settings

logger = logging.getLogger(__name__)

PREFIX = "backup_tasks:"
SLOT_TTL_S = 8 * 24 * 3600
DELIVERY_TTL_S = 2 * 24 * 3600
LIVENESS_TTL_S = 15.0
LIVENESS_RENEW_S = 3.0  # five renewals per TTL: a few late ones (a busy process, a Redis hiccup) are absorbed
LOST_AFTER_S = 2 * LIVENESS_RENEW_S  # how long a client sees the key missing before it calls the job lost

_clients: dict[tuple[int, str], redis.Redis] = {}


def client(url: str | None = None) -> redis.Redis:
    """A Redis client on the broker (one per process: a forked worker child must not share its parent's)."""
    url = url or get_settings().CELERY_BROKER_URL.get_secret_value()
    key = (os.getpid(), url)
    if key not in _clients:
        _clients[key] = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10,
                                             health_check_interval=30)
    return _clients[key]


def call(fn, *args, **kwargs):
    """fn(*args, **kwargs) on Redis; a Redis failure becomes QueueError (broker URL masked) with a hint."""
    try:
        return fn(*args, **kwargs)
    except redis.RedisError as exc:
        url = dsn.mask(get_settings().CELERY_BROKER_URL.get_secret_value())
        raise QueueError(f"Redis at {url} failed: {type(exc).__name__}: {exc}",
                         hint="Check that Redis is running and CELERY_BROKER_URL points at it.") from None


# --- liveness ---------------------------------------------------------------------------------------------

def alive_key(task_id: str) -> str:
    return f"{PREFIX}alive:{task_id}"


def job_alive(task_id: str, r: redis.Redis | None = None) -> bool:
    return bool(call((r or client()).exists, alive_key(task_id)))


class Heartbeat:
    """Keeps a task's liveness key from a daemon thread while the task runs."""

    def __init__(self, r: redis.Redis, task_id: str, ttl_s: float = LIVENESS_TTL_S,
                 every_s: float = LIVENESS_RENEW_S):
        self.r, self.task_id, self.ttl_ms, self.every_s = r, task_id, max(int(ttl_s * 1000), 100), every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backup-tasks-heartbeat", daemon=True)

    def _beat(self) -> None:
        self.r.set(alive_key(self.task_id), str(os.getpid()), px=self.ttl_ms)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self._beat()
            except redis.RedisError as exc:
                logger.warning("liveness heartbeat to Redis failed: %s", exc)

    def start(self) -> None:
        call(self._beat)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.r.delete(alive_key(self.task_id))
        except redis.RedisError:
            pass


@contextmanager
def alive_while(task_id: str | None, r: redis.Redis | None = None, **timing: float) -> Iterator[None]:
    """The task's liveness key, kept for the duration of the block (nothing without a task id)."""
    if not task_id:
        yield
        return
    heartbeat = Heartbeat(r or client(), task_id, **timing)
    heartbeat.start()
    try:
        yield
    finally:
        heartbeat.stop()


# --- schedule slots and delivery counts -------------------------------------------------------------------

_CLAIM_SLOT = """
local v = redis.call('GET', KEYS[1])
if not v then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return {'claimed', ARGV[1]} end
if v == ARGV[1] then return {'resume', v} end
if string.sub(v, 1, string.len(ARGV[1]) + 6) == 'done:' .. ARGV[1] .. ':' then return {'created', v} end
return {'taken', v}
"""


def slot_key(database_url: str, slot: str) -> str:
    """The slot's key: the database as dsn.DatabaseTarget.key (host:port/name, never the URL's secrets)."""
    return f"{PREFIX}slot:{dsn.parse(database_url).key}:{slot}"


def claim_slot(database_url: str, slot: str, task_id: str, r: redis.Redis | None = None) -> tuple[str, str | None]:
    """Claim a schedule slot for `task_id`. Returns (status, detail):

    - ("claimed", None): first claim, make the backup;
    - ("resume", None): this very task claimed it before and died (redelivery) or is retrying: make the backup;
    - ("created", name): this task already made backup `name` before it died: continue after the backup;
    - ("taken", other_task_id): another delivery owns the slot: do nothing.
    """
    key = slot_key(database_url, slot)
    status, value = call((r or client()).eval, _CLAIM_SLOT, 1, key, task_id, SLOT_TTL_S)
    status = status.decode() if isinstance(status, bytes) else status
    value = value.decode() if isinstance(value, bytes) else value
    if status == "created":
        return status, value.split(":", 2)[2]
    if status == "taken":
        return status, value.split(":", 2)[1] if value.startswith("done:") else value
    return status, None


def slot_created(database_url: str, slot: str, task_id: str, backup_name: str, r: redis.Redis | None = None) -> None:
    """Record that the slot's backup exists, so a redelivery continues with upload/cleanup instead of a second one."""
    call((r or client()).set, slot_key(database_url, slot), f"done:{task_id}:{backup_name}", ex=SLOT_TTL_S)


def count_delivery(task_id: str, retries: int, r: redis.Redis | None = None) -> int:
    """How many times this attempt (task id, retry number) has been delivered, this one included."""
    key = f"{PREFIX}deliveries:{task_id}:{retries}"
    r = r or client()
    count = call(r.incr, key)
    call(r.expire, key, DELIVERY_TTL_S)
    return int(count)
